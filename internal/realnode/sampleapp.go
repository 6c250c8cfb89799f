package realnode

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// SampleAppImage is the name the sample app's image is loaded under; Pod specs may say
// `image: sampleapp:dev`.
const SampleAppImage = "docker.io/library/sampleapp:dev"

// SampleApp builds hack/sampleapp (a static HTTP server: GET / answers $MESSAGE, GET
// /ready is its readiness, --never-ready keeps it unready) into dir and returns its
// image: user 65532, port 8080.
func SampleApp(ctx context.Context, dir string) (v1.Image, error) {
	script, err := findScript()
	if err != nil {
		return nil, err
	}
	root := filepath.Dir(filepath.Dir(filepath.Dir(script)))
	bin := filepath.Join(dir, "sampleapp")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./hack/sampleapp")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building hack/sampleapp: %w: %s", err, out)
	}
	return BinaryImage(bin, "65532:65532", nil)
}
