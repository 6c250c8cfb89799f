// Package imagebuild builds deployd's container image without Docker or a registry, by
// following the Dockerfile itself, and writes images as tarballs a node's containerd imports.
//
// The Dockerfile stays the one recipe: its build stage runs on the host (the context that
// .dockerignore admits, its COPY and RUN lines), and its final stage is laid on a base that
// stands in for distroless. Tests, the demo and the real-node harness use it; users use Docker.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is one entry of an image's single layer.
type File struct {
	// Path is absolute inside the image ("/deployd").
	Path string
	// Mode holds the permission bits (0o755); a directory when Dir is set.
	Mode int64
	// Dir makes the entry a directory; Data is then ignored.
	Dir bool
	// Data is the file's content.
	Data []byte
	// UID and GID own the entry (0 when unset, as in distroless).
	UID, GID int
}

// Spec describes an image: files on an empty base and the config a runtime reads.
type Spec struct {
	// Files make up the image's one layer; parent directories are added as needed.
	Files []File
	// Entrypoint and Cmd are the image config's.
	Entrypoint, Cmd []string
	// User is "uid" or "uid:gid".
	User string
	// Env holds KEY=value pairs.
	Env []string
	// WorkingDir is where the process starts.
	WorkingDir string
	// ExposedPorts are "8080/tcp" and the like.
	ExposedPorts []string
}

// Build makes the image a Spec describes. The layer's entries are sorted and dated at the
// epoch, so the same Spec makes the same image digest.
func Build(spec Spec) (v1.Image, error) {
	layerTar, err := tarLayer(spec.Files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH // the binary is built here, for here
	cfg.Config.Entrypoint = spec.Entrypoint
	cfg.Config.Cmd = spec.Cmd
	cfg.Config.User = spec.User
	cfg.Config.Env = spec.Env
	cfg.Config.WorkingDir = spec.WorkingDir
	if len(spec.ExposedPorts) > 0 {
		cfg.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range spec.ExposedPorts {
			cfg.Config.ExposedPorts[p] = struct{}{}
		}
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	return img, nil
}

// WriteTarball writes img tagged ref ("deployd:dev" is docker.io/library/deployd:dev, as
// containerd names it) to file, in the format `ctr images import` reads.
func WriteTarball(img v1.Image, ref, file string) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image name %q: %w", ref, err)
	}
	if err := tarball.WriteToFile(file, tag, img); err != nil {
		return fmt.Errorf("writing image %s to %s: %w", ref, file, err)
	}
	return nil
}

func tarLayer(files []File) ([]byte, error) {
	entries := map[string]File{}
	for _, f := range files {
		p := path.Clean(f.Path)
		if !path.IsAbs(p) || p == "/" {
			return nil, fmt.Errorf("image file %q: want an absolute path below /", f.Path)
		}
		f.Path = p
		entries[p] = f
		for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
			if _, ok := entries[dir]; !ok {
				entries[dir] = File{Path: dir, Dir: true, Mode: 0o755}
			}
		}
	}
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := entries[p]
		hdr := &tar.Header{
			Name:    strings.TrimPrefix(p, "/"),
			Mode:    f.Mode,
			Uid:     f.UID,
			Gid:     f.GID,
			ModTime: time.Unix(0, 0),
			Format:  tar.FormatPAX,
		}
		if f.Dir {
			hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
		} else {
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("image file %s: %w", p, err)
		}
		if _, err := tw.Write(f.Data); err != nil && !f.Dir {
			return nil, fmt.Errorf("image file %s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	return buf.Bytes(), nil
}

// FileFromDisk reads a host file into an image File at imagePath.
func FileFromDisk(hostPath, imagePath string, mode int64) (File, error) {
	data, err := os.ReadFile(hostPath)
	if err != nil {
		return File{}, fmt.Errorf("image file %s: %w", imagePath, err)
	}
	return File{Path: imagePath, Mode: mode, Data: data}, nil
}
