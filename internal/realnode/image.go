package realnode

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
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
	if err := WriteTarball(img, ref, f.Name()); err != nil {
		return err
	}
	return n.ImportImage(ctx, f.Name())
}

// WriteTarball writes img, named ref, as a tarball ctr and `docker load` accept.
func WriteTarball(img v1.Image, ref, path string) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image name %q: %w", ref, err)
	}
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		return fmt.Errorf("writing image %s to %s: %w", ref, path, err)
	}
	return nil
}

// BinaryImage is an image of one static binary at /<its name>, run as its entrypoint by
// user (uid:gid), with env and an empty /tmp.
func BinaryImage(binaryPath, user string, env []string, args ...string) (v1.Image, error) {
	bin, err := os.ReadFile(binaryPath)
	if err != nil {
		return nil, fmt.Errorf("reading the image's binary: %w", err)
	}
	target := "/" + path.Base(binaryPath)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777},
		{Name: target[1:], Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))},
	} {
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	})
	if err != nil {
		return nil, fmt.Errorf("building the image layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config.Entrypoint = []string{target}
	cfg.Config.Cmd = args
	cfg.Config.User = user
	cfg.Config.Env = append([]string{"PATH=/"}, env...)
	return mutate.ConfigFile(img, cfg)
}

func (n *Node) importSandboxImage(ctx context.Context) error {
	img, err := BinaryImage(n.bin("pause"), "65535:65535", nil)
	if err != nil {
		return fmt.Errorf("the Pod sandbox image: %w", err)
	}
	return n.LoadImage(ctx, img, SandboxImage)
}
