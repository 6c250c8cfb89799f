package imagebuild

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	appsv1 "k8s.io/api/apps/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

const repo = "../.."

// builtImage is deployd's image built once from the Dockerfile for the tests that read it.
var builtImage = sync.OnceValues(func() (v1.Image, error) {
	return Deployd(context.Background(), repo, BuildOptions{Args: map[string]string{"VERSION": "v9.9.9-test", "COMMIT": "abc123"}})
})

// The Dockerfile's own recipe, over the context its .dockerignore admits, makes an image
// whose entrypoint is a working deployd stamped with the build arguments.
func TestDockerfileBuildsFromItsContext(t *testing.T) {
	img, err := builtImage()
	if err != nil {
		t.Fatalf("building deployd's image from the Dockerfile: %v", err)
	}
	files := layerFiles(t, img)
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	entry := cfg.Config.Entrypoint
	if len(entry) == 0 {
		t.Fatal("the image has no entrypoint")
	}
	bin, ok := files[entry[0]]
	if !ok {
		t.Fatalf("the entrypoint %s is not in the image", entry[0])
	}
	if bin.mode&0o111 == 0 {
		t.Fatalf("the entrypoint %s is not executable (mode %o)", entry[0], bin.mode)
	}
	exe := filepath.Join(t.TempDir(), "deployd")
	if err := os.WriteFile(exe, bin.data, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(exe, append(entry[1:], "version")...).CombinedOutput()
	if err != nil {
		t.Fatalf("the image's deployd version: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "v9.9.9-test") || !strings.Contains(string(out), "abc123") {
		t.Errorf("deployd version = %q, want the VERSION and COMMIT build arguments in it", out)
	}
}

// A context that leaves out a directory the build copies fails at that COPY, as Docker does:
// the bug where pkg/ was missing from .dockerignore is caught here, not by users.
func TestCopyOfAnExcludedDirectoryFails(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, p := range []string{"go.mod", "go.sum", "Dockerfile", "cmd", "internal", "pkg"} {
		if out, err := exec.Command("cp", "-r", filepath.Join(repo, p), dir).CombinedOutput(); err != nil {
			t.Fatalf("copying %s: %v\n%s", p, err, out)
		}
	}
	ignore, err := os.ReadFile(filepath.Join(repo, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	without := strings.ReplaceAll(string(ignore), "!pkg/\n", "")
	if without == string(ignore) {
		t.Fatal(".dockerignore does not admit pkg/: the image's build needs it (cmd/deployd imports pkg/client)")
	}
	if err := os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte(without), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Deployd(ctx, dir, BuildOptions{})
	if err == nil || !strings.Contains(err.Error(), "pkg: excluded by .dockerignore") {
		t.Fatalf("building with pkg/ left out of the context: err = %v, want the COPY of pkg refused as excluded", err)
	}
}

// The image agrees with the Dockerfile's final stage and with what k8s/ runs it as: user,
// entrypoint, port, and the files a Go program in distroless finds.
func TestImageAgreesWithDockerfileAndK8s(t *testing.T) {
	r, err := ReadDockerfile(filepath.Join(repo, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := builtImage()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	user, entry, ports := r.Config()
	if cfg.Config.User != user {
		t.Errorf("image user %q, Dockerfile USER %q", cfg.Config.User, user)
	}
	if diff := cmp.Diff(entry, cfg.Config.Entrypoint); diff != "" {
		t.Errorf("entrypoint (-Dockerfile +image):\n%s", diff)
	}
	for _, p := range ports {
		if _, ok := cfg.Config.ExposedPorts[p]; !ok {
			t.Errorf("Dockerfile EXPOSE %s is not exposed by the image (%v)", p, cfg.Config.ExposedPorts)
		}
	}

	dep := k8sDeployment(t)
	pod := dep.Spec.Template.Spec
	uid, gid, _ := strings.Cut(user, ":")
	if pod.SecurityContext.RunAsUser == nil || strconv.FormatInt(*pod.SecurityContext.RunAsUser, 10) != uid {
		t.Errorf("k8s/ runs deployd as user %v, the image as %s", pod.SecurityContext.RunAsUser, uid)
	}
	if pod.SecurityContext.RunAsGroup == nil || strconv.FormatInt(*pod.SecurityContext.RunAsGroup, 10) != gid {
		t.Errorf("k8s/ runs deployd as group %v, the image as %s", pod.SecurityContext.RunAsGroup, gid)
	}
	c := pod.Containers[0]
	var k8sPorts []string
	for _, p := range c.Ports {
		k8sPorts = append(k8sPorts, strconv.Itoa(int(p.ContainerPort))+"/tcp")
	}
	if !slices.Equal(k8sPorts, ports) {
		t.Errorf("k8s/ container ports %v, Dockerfile EXPOSE %v", k8sPorts, ports)
	}
	listen := ""
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--listen="); ok {
			listen = v
		}
	}
	if !strings.HasSuffix(listen, ":"+strings.TrimSuffix(ports[0], "/tcp")) {
		t.Errorf("k8s/ runs deployd with --listen=%s, the image exposes %s", listen, ports[0])
	}

	files := layerFiles(t, img)
	if f, ok := files["/etc/passwd"]; !ok || !strings.Contains(string(f.data), ":"+uid+":"+gid+":") {
		t.Errorf("/etc/passwd has no user %s:%s", uid, gid)
	}
	if f, ok := files["/etc/ssl/certs/ca-certificates.crt"]; !ok || !strings.Contains(string(f.data), "BEGIN CERTIFICATE") {
		t.Error("the image has no CA certificates: deployd could not fetch over https")
	}
	if f, ok := files["/tmp"]; !ok || f.mode&0o1777 != 0o1777 {
		t.Errorf("/tmp missing or not 1777 in the image: %+v", f.mode)
	}
	// With a read-only root, every path deployd writes must be a volume in k8s/.
	mounts := map[string]bool{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = !m.ReadOnly
	}
	for _, want := range []string{"/tmp", "/var/cache/deployd"} {
		if !mounts[want] {
			t.Errorf("k8s/ mounts no writable volume at %s, and the root filesystem is read-only", want)
		}
	}
	if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
		t.Error("k8s/ should run deployd with a read-only root filesystem")
	}
}

// The image written as a tarball reads back with the same digest, under the name given.
func TestWriteTarballRoundTrips(t *testing.T) {
	img, err := Build(Spec{
		Files:      []File{{Path: "/bin/hello", Mode: 0o755, Data: []byte("#!hello")}},
		Entrypoint: []string{"/bin/hello"},
		User:       "65532:65532",
	})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "img.tar")
	if err := WriteTarball(img, "deployd-test:dev", file); err != nil {
		t.Fatal(err)
	}
	back, err := tarball.ImageFromPath(file, nil)
	if err != nil {
		t.Fatalf("reading the tarball back: %v", err)
	}
	want, _ := img.Digest()
	got, _ := back.Digest()
	if want != got {
		t.Errorf("digest after the round trip %s, want %s", got, want)
	}
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(file) })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || !slices.Contains(m[0].RepoTags, "deployd-test:dev") {
		t.Errorf("tarball tags %+v, want deployd-test:dev", m)
	}
	again, _ := Build(Spec{Files: []File{{Path: "/bin/hello", Mode: 0o755, Data: []byte("#!hello")}}, Entrypoint: []string{"/bin/hello"}, User: "65532:65532"})
	if d, _ := again.Digest(); d != want {
		t.Errorf("the same spec built twice: digests %s and %s, want the same", want, d)
	}
}

func TestReadDockerfileRefusesWhatItCannotFollow(t *testing.T) {
	for _, tc := range []struct{ name, dockerfile, want string }{
		{"an instruction it does not follow", "FROM golang:1.26 AS build\nHEALTHCHECK CMD true\nFROM x\n", "Dockerfile:2: HEALTHCHECK is not followed"},
		{"a shell-form entrypoint", "FROM golang:1.26 AS build\nFROM x\nENTRYPOINT /deployd\n", "Dockerfile:3: ENTRYPOINT in shell form"},
		{"one stage", "FROM golang:1.26\n", "1 stages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "Dockerfile")
			if err := os.WriteFile(file, []byte(tc.dockerfile), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadDockerfile(file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

type layerFile struct {
	mode int64
	data []byte
}

func layerFiles(t *testing.T, img v1.Image) map[string]layerFile {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]layerFile{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(tr)
			files["/"+strings.TrimSuffix(h.Name, "/")] = layerFile{mode: h.Mode, data: data}
		}
		rc.Close()
	}
	return files
}

func k8sDeployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	f, err := os.Open(filepath.Join(repo, "k8s", "40-deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		var d appsv1.Deployment
		if err := dec.Decode(&d); err != nil {
			t.Fatalf("no Deployment in k8s/40-deployment.yaml: %v", err)
		}
		if d.Kind == "Deployment" {
			return &d
		}
	}
}
