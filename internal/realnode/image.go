package realnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/deployd/deployd/internal/imagebuild"
)

// ImportImage loads an image tarball (docker save format, as tarball.WriteToFile writes
// it) into the node's containerd, under the names it carries. A Pod spec's short name
// resolves as Docker's does: `image: app:dev` is docker.io/library/app:dev.
func (n *Node) ImportImage(ctx context.Context, tarballPath string) error {
	if err := n.ctr(ctx, "images", "import", "--platform", "linux/"+runtime.GOARCH, tarballPath); err != nil {
		return fmt.Errorf("importing image %s into the real node: %w", tarballPath, err)
	}
	return nil
}

// LoadImage writes img as a tarball named ref into the node's directory and imports it.
func (n *Node) LoadImage(ctx context.Context, img v1.Image, ref string) error {
	f, err := os.CreateTemp(n.Dir, "image-*.tar")
	if err != nil {
		return err
	}
	f.Close()
	defer os.Remove(f.Name())
	if err := imagebuild.WriteTarball(img, ref, f.Name()); err != nil {
		return err
	}
	return n.ImportImage(ctx, f.Name())
}

// BinaryImage is an image of one static binary at /<its name>, run as its entrypoint by
// user (uid:gid) with args, env and an empty /tmp.
func BinaryImage(binaryPath, user string, env []string, args ...string) (v1.Image, error) {
	bin, err := os.ReadFile(binaryPath)
	if err != nil {
		return nil, fmt.Errorf("reading the image's binary: %w", err)
	}
	target := "/" + filepath.Base(binaryPath)
	return imagebuild.Build(imagebuild.Spec{
		Files: []imagebuild.File{
			{Path: "/tmp", Dir: true, Mode: 0o1777},
			{Path: target, Mode: 0o755, Data: bin},
		},
		Entrypoint: []string{target},
		Cmd:        args,
		User:       user,
		Env:        append([]string{"PATH=/"}, env...),
	})
}

func (n *Node) importSandboxImage(ctx context.Context) error {
	img, err := BinaryImage(n.bin("pause"), "65535:65535", nil)
	if err != nil {
		return fmt.Errorf("the Pod sandbox image: %w", err)
	}
	return n.LoadImage(ctx, img, SandboxImage)
}

// ContainerSpec returns the OCI runtime spec (config.json) the node's containerd gave runc
// for a running container, named as a Pod's status names it ("containerd://<id>"): what
// the container really runs with (read-only root, user, mounts), as applied.
func (n *Node) ContainerSpec(containerID string) ([]byte, error) {
	id, ok := strings.CutPrefix(containerID, "containerd://")
	if !ok || id == "" || strings.ContainsAny(id, "/.") {
		return nil, fmt.Errorf("container %q: not a containerd container ID", containerID)
	}
	b, err := os.ReadFile(n.path("containerd", "state", "io.containerd.runtime.v2.task", "k8s.io", id, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("the runtime spec of container %s (is it running?): %w", id, err)
	}
	return b, nil
}
