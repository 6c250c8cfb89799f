package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/deployd/deployd/internal/gittest"
)

// webChart is a chart in deploy/chart with values per environment: dev adds an extra
// ConfigMap, production runs 3 replicas of tag 2.0.
func webChart() map[string]string {
	return map[string]string{
		"deploy/chart/Chart.yaml":             "apiVersion: v2\nname: web\nversion: 1.4.0\nappVersion: \"2.0\"\n",
		"deploy/chart/values.yaml":            "replicas: 1\nimage: {repository: nginx, tag: \"1.0\"}\nextra: false\n",
		"deploy/chart/values-production.yaml": "replicas: 3\nimage: {tag: \"2.0\"}\n",
		"deploy/chart/values-dev.yaml":        "extra: true\n",
		"deploy/chart/templates/deployment.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
      - name: web
        image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
`,
		"deploy/chart/templates/cluster.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-cluster
data:
  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}
  apps: {{ .Capabilities.APIVersions.Has "apps/v1/Deployment" | quote }}
  namespace: {{ .Release.Namespace | quote }}
`,
		"deploy/chart/templates/extra.yaml": `{{- if .Values.extra }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-extra
{{- end }}
`,
	}
}

// TestChartDeployedToTwoEnvironments runs the daemon against the cluster with one chart
// configured for dev and production: each gets its own replicas and image, the chart sees
// the API server's version, the API says the chart and its version, and an object the
// templates stop producing is pruned.
func TestChartDeployedToTwoEnvironments(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	repo.Commit("main", "chart", webChart())
	devNS, prodNS, stateNS := env.Namespace(t), env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	url := srv.RepoURL("shop/web")
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n"+
		"  - {name: shop/web, url: '"+url+"', namespace: "+devNS+", environment: dev, path: deploy/chart, interval: 0}\n"+
		"  - {name: shop/web, url: '"+url+"', namespace: "+prodNS+", environment: production, path: deploy/chart, interval: 0}\n")
	secret := writeFile(t, dir, "secret", "hook-secret\n")
	base, logs, _ := startDaemon(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"),
		"--webhook-secret-file", secret, "--namespace", stateNS, "--log-format", "json")

	ctx := context.Background()
	waitFor := func(what string, cond func(ctx context.Context) (bool, error)) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := wait.PollUntilContextCancel(wctx, 50*time.Millisecond, true, cond); err != nil {
			t.Fatalf("waiting for %s: %v\n%s", what, err, logs)
		}
	}
	for _, want := range []struct{ ns, image string }{{devNS, "nginx:1.0"}, {prodNS, "nginx:2.0"}} {
		waitFor("the Deployment in "+want.ns, func(ctx context.Context) (bool, error) {
			d, err := env.Client.AppsV1().Deployments(want.ns).Get(ctx, "web", metav1.GetOptions{})
			return err == nil && d.Spec.Template.Spec.Containers[0].Image == want.image, nil
		})
	}
	prod, _ := env.Client.AppsV1().Deployments(prodNS).Get(ctx, "web", metav1.GetOptions{})
	dev, _ := env.Client.AppsV1().Deployments(devNS).Get(ctx, "web", metav1.GetOptions{})
	if *prod.Spec.Replicas != 3 || *dev.Spec.Replicas != 1 {
		t.Errorf("replicas: production %d, dev %d; want 3 and 1", *prod.Spec.Replicas, *dev.Spec.Replicas)
	}
	server, err := env.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	caps, err := env.Client.CoreV1().ConfigMaps(prodNS).Get(ctx, "web-cluster", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"kubeVersion": server.GitVersion, "apps": "true", "namespace": prodNS}, caps.Data); diff != "" {
		t.Errorf(".Capabilities and .Release (-want +got):\n%s", diff)
	}
	if _, err := env.Client.CoreV1().ConfigMaps(prodNS).Get(ctx, "web-extra", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("web-extra in production: %v, want not found (extra is dev's)", err)
	}
	if _, err := env.Client.CoreV1().ConfigMaps(devNS).Get(ctx, "web-extra", metav1.GetOptions{}); err != nil {
		t.Errorf("web-extra in dev: %v", err)
	}

	var status struct {
		Environments []struct {
			Environment string
			Current     struct {
				Renderer string
				Chart    struct{ Name, Version string }
			}
		}
	}
	resp, err := http.Get(base + "/deployment/shop/web")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&status); err != nil {
		t.Fatal(err)
	}
	if len(status.Environments) != 2 {
		t.Errorf("the API lists %d environments, want 2", len(status.Environments))
	}
	for _, e := range status.Environments {
		if got := e.Current.Renderer + " " + e.Current.Chart.Name + " " + e.Current.Chart.Version; got != "helm web 1.4.0" {
			t.Errorf("%s: the API says %q, want helm web 1.4.0", e.Environment, got)
		}
	}

	// dev's values stop producing web-extra: it is pruned, and production is untouched.
	repo.Commit("main", "no extra", map[string]string{"deploy/chart/values-dev.yaml": "extra: false\n"})
	pushHook(t, base, "hook-secret", "shop/web")
	waitFor("web-extra pruned in dev", func(ctx context.Context) (bool, error) {
		_, err := env.Client.CoreV1().ConfigMaps(devNS).Get(ctx, "web-extra", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if _, err := env.Client.AppsV1().Deployments(devNS).Get(ctx, "web", metav1.GetOptions{}); err != nil {
		t.Errorf("dev's Deployment after the prune: %v", err)
	}
}

// TestChartErrorsAreReported: a template error fails the deployment with the template's
// file and line, as a broken plain manifest does.
func TestChartErrorsAreReported(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/api")
	files := webChart()
	files["deploy/chart/templates/broken.yaml"] = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ required \"set .Values.name\" .Values.name }}\n"
	repo.Commit("main", "broken chart", files)
	ns, stateNS := env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/api, url: '"+srv.RepoURL("shop/api")+"', namespace: "+ns+", environment: dev, path: deploy/chart, interval: 0}\n")
	_, logs, _ := startDaemon(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"),
		"--namespace", stateNS, "--log-format", "json")
	waitLog(t, logs, func(rec map[string]any) bool {
		e, _ := rec["err"].(string)
		return strings.Contains(e, "deploy/chart/templates/broken.yaml:4: helm template: set .Values.name")
	})
}

func TestRenderCommand(t *testing.T) {
	root := t.TempDir()
	for name, content := range webChart() {
		writeTree(t, root, name, content)
	}
	writeTree(t, root, "deploy/values/big.yaml", "replicas: 5\n")
	code, out, errOut := runCLI(t, "render", "--root", root, "--dir", "deploy/chart", "--environment", "production", "--namespace", "shop",
		"--release-name", "shop-web", "--values", "deploy/values/big.yaml", "--set", "image.tag=3.1")
	if code != 0 {
		t.Fatalf("render exited %d: %s", code, errOut)
	}
	for _, want := range []string{
		"# rendered by helm chart web 1.4.0: 2 object(s)",
		"# Source: deploy/chart/templates/deployment.yaml:1\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop-web\n",
		"replicas: 5\n",
		"image: nginx:3.1\n",
		"namespace: shop\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	writeTree(t, root, "deploy/chart/templates/broken.yaml", "{{ .Values.image.tag.nothing }}\n")
	code, _, errOut = runCLI(t, "render", "--root", root, "--dir", "deploy/chart")
	if want := "deploy/chart/templates/broken.yaml:1: helm template:"; code != 1 || !strings.HasPrefix(errOut, want) {
		t.Errorf("render of a broken chart exited %d with %q, want 1 and %s...", code, errOut, want)
	}
}

// writeTree writes a file under dir, making its directories.
func writeTree(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, name, content)
}
