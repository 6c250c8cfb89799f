package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deployd/deployd/internal/githubtest"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/pkg/client"
)

func webApp(image string) string {
	return strings.Replace(app, "nginx:1.27", image, 1)
}

// TestWholePath: push → signed webhook → applied → rolled out → GitHub statuses → the API;
// a broken push is an error on GitHub and in the API with the previous version still
// running; the fix goes through. All with the deployd binary.
func TestWholePath(t *testing.T) {
	gh := githubtest.New(t)
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	repo.Commit("main", "v1", map[string]string{"deploy/manifests/app.yaml": webApp("nginx:1.27")})
	ns, state := env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	write := writer(t, dir)
	cfg := write("repos.yaml", "repos:\n  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+ns+", environment: prod, interval: 0}\n")
	d := startBinary(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"), "--namespace", state,
		"--webhook-secret-file", write("secret", "s3cret"), "--github-token-file", write("gh", "gh-token"), "--github-api-url", gh.URL)
	ctx := context.Background()

	status := func() client.Environment {
		res, err := d.client.GetDeploymentWithResponse(ctx, "shop", "web", &client.GetDeploymentParams{})
		if err != nil || res.JSON200 == nil {
			return client.Environment{}
		}
		return res.JSON200.Environments[0]
	}
	waitFor := func(what string, ok func(client.Environment) bool) client.Environment {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			if e := status(); ok(e) {
				return e
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %+v\n%s", what, status(), d.logs)
			}
			time.Sleep(100 * time.Millisecond) // polling the binary's API, with a deadline
		}
	}
	push := func() {
		t.Helper()
		body := `{"ref":"refs/heads/main","repository":{"full_name":"shop/web"}}`
		mac := hmac.New(sha256.New, []byte("s3cret"))
		mac.Write([]byte(body))
		req, _ := http.NewRequest(http.MethodPost, "http://"+d.addr+"/webhooks/github", strings.NewReader(body))
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("push webhook: %v %v", err, resp)
		}
		resp.Body.Close()
	}
	statuses := func(id int64, want ...string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cmp.Equal(want, gh.Statuses(id)) {
			if time.Now().After(deadline) {
				t.Fatalf("GitHub deployment %d: %v, want %v", id, gh.Statuses(id), want)
			}
			time.Sleep(50 * time.Millisecond) // polling the stand-in, with a deadline
		}
	}
	waitFor("first deployment", func(e client.Environment) bool { return e.Phase == "succeeded" })
	statuses(1001, "queued", "in_progress", "success")

	v2 := repo.Commit("main", "v2", map[string]string{"deploy/manifests/app.yaml": webApp("nginx:1.28")})
	push()
	e := waitFor("v2 rolled out", func(e client.Environment) bool {
		return e.Phase == "succeeded" && e.DeployedCommit != nil && *e.DeployedCommit == v2
	})
	statuses(1002, "queued", "in_progress", "success")
	for _, o := range e.Objects {
		if o.Kind == "Deployment" && (o.Replicas == nil || o.Replicas.Available != 2 || (*o.Images)[0] != "nginx:1.28") {
			t.Errorf("Deployment after v2: %+v", o)
		}
	}

	repo.Commit("main", "broken", map[string]string{"deploy/manifests/broken.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: broken}\nspec: {replicas: many}\n"})
	push()
	e = waitFor("broken push is an error", func(e client.Environment) bool { return e.Phase == "error" })
	statuses(1003, "queued", "in_progress", "error")
	if e.DeployedCommit == nil || *e.DeployedCommit != v2 || e.Current == nil || e.Current.Error == nil || !strings.Contains(*e.Current.Error, "broken.yaml") {
		t.Errorf("after the broken push: %+v", e)
	}
	dep, err := env.Client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil || dep.Spec.Template.Spec.Containers[0].Image != "nginx:1.28" || dep.Status.AvailableReplicas != 2 {
		t.Errorf("the previous version is not running: %v %+v", err, dep.Status)
	}

	fixed := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: broken}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: broken}}\n" +
		"  template:\n    metadata: {labels: {app: broken}}\n    spec: {containers: [{name: w, image: \"busybox:1\"}]}\n"
	fix := repo.Commit("main", "fix", map[string]string{"deploy/manifests/broken.yaml": fixed})
	push()
	waitFor("the fix goes through", func(e client.Environment) bool {
		return e.Phase == "succeeded" && e.DeployedCommit != nil && *e.DeployedCommit == fix
	})
	statuses(1004, "queued", "in_progress", "success")
}
