package realnode

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

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

// SampleAppManifests is an app of two real Pods of the sample app answering message (args
// are its command-line arguments, such as --never-ready), whose readiness probe decides
// the rollout, and a Service `web` in front: port 80 to the Pods' 8080.
func SampleAppManifests(message string, args ...string) string {
	return `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: sampleapp:dev
          imagePullPolicy: IfNotPresent
          args: [` + strings.Join(args, ", ") + `]
          env: [{name: MESSAGE, value: "` + message + `"}]
          ports: [{containerPort: 8080}]
          readinessProbe: {httpGet: {path: /ready, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
`
}
