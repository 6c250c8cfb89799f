package imagebuild

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// DistrolessNonroot is the base the Dockerfile's final stage names, and the one this package
// stands in for.
const DistrolessNonroot = "gcr.io/distroless/static-debian12:nonroot"

// hostCABundle is where Debian keeps the bundle distroless ships (from the same package).
const hostCABundle = "/etc/ssl/certs/ca-certificates.crt"

// Image follows the whole Dockerfile: it runs the build stage into opts.Root, then lays the
// final stage's COPY --from files on a stand-in for its base, with its USER, EXPOSE and
// ENTRYPOINT.
func Image(ctx context.Context, r *Recipe, opts BuildOptions) (v1.Image, error) {
	if err := RunBuildStage(ctx, r, opts); err != nil {
		return nil, err
	}
	spec, err := baseSpec(r.Final.From)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.File, err)
	}
	for _, s := range r.Final.Steps {
		files, err := finalStep(s, r, opts.Root)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", r.File, s.Line, err)
		}
		spec.Files = append(spec.Files, files...)
	}
	if r.Final.User != "" {
		spec.User = r.Final.User
	}
	if r.Final.Entrypoint != nil {
		spec.Entrypoint = r.Final.Entrypoint
	}
	_, _, spec.ExposedPorts = r.Config()
	return Build(spec)
}

// finalStep turns one of the final stage's steps into image files.
func finalStep(s Step, r *Recipe, root string) ([]File, error) {
	if s.Op != "copy" || s.From != r.Build.Name || s.From == "" {
		return nil, fmt.Errorf("%s in the final stage: only COPY --from=%s is followed by imagebuild", strings.ToUpper(s.Op), r.Build.Name)
	}
	srcs, dst := s.Args[:len(s.Args)-1], s.Args[len(s.Args)-1]
	var files []File
	for _, src := range srcs {
		target := dst
		if len(srcs) > 1 || strings.HasSuffix(dst, "/") {
			target = path.Join(dst, path.Base(src))
		}
		host := filepath.Join(root, filepath.FromSlash(src))
		info, err := os.Stat(host)
		if err != nil {
			return nil, fmt.Errorf("COPY --from=%s %s: the build stage did not make it: %w", s.From, src, err)
		}
		f, err := FileFromDisk(host, target, int64(info.Mode().Perm()))
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// baseSpec stands in for a base image: the files and config of distroless static nonroot
// that a Go program can notice (users, CA certificates, /tmp, the home directory).
func baseSpec(from string) (Spec, error) {
	if from != DistrolessNonroot {
		return Spec{}, fmt.Errorf("final stage FROM %s: imagebuild stands in for %s only", from, DistrolessNonroot)
	}
	ca, err := FileFromDisk(hostCABundle, "/etc/ssl/certs/ca-certificates.crt", 0o644)
	if err != nil {
		return Spec{}, fmt.Errorf("CA certificates for the image (apt-get install ca-certificates): %w", err)
	}
	return Spec{
		Files: []File{
			{Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/sbin/nologin\n" +
				"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
				"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
			{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n")},
			{Path: "/etc/nsswitch.conf", Mode: 0o644, Data: []byte("hosts: files dns\n")},
			ca,
			{Path: "/tmp", Dir: true, Mode: 0o1777},
			{Path: "/home/nonroot", Dir: true, Mode: 0o700, UID: 65532, GID: 65532},
		},
		User:       "65532",
		WorkingDir: "/home/nonroot",
		Env: []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
		},
	}, nil
}

// Deployd builds deployd's image from the repository at repo, as its Dockerfile says. The
// build stage runs in a temporary directory unless opts.Root names one.
func Deployd(ctx context.Context, repo string, opts BuildOptions) (v1.Image, error) {
	r, err := ReadDockerfile(filepath.Join(repo, "Dockerfile"))
	if err != nil {
		return nil, err
	}
	opts.Context = repo
	if opts.Root == "" {
		root, err := os.MkdirTemp("", "deployd-image-")
		if err != nil {
			return nil, fmt.Errorf("building deployd's image: %w", err)
		}
		defer os.RemoveAll(root)
		opts.Root = root
	}
	return Image(ctx, r, opts)
}
