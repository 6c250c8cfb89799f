package cli

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

func signedDelivery(t *testing.T, base, secret, event, body string) int {
	t.Helper()
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	req, _ := http.NewRequest(http.MethodPost, base+"/webhooks/github", strings.NewReader(body))
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitStatuses waits until GitHub deployment id has the wanted statuses.
func waitStatuses(t *testing.T, gh *githubtest.Server, id int64, want []string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := gh.Statuses(id)
		if cmp.Equal(want, got) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GitHub deployment %d statuses %v, want %v", id, got, want)
		}
		time.Sleep(50 * time.Millisecond) // polling the stand-in's record, with a deadline
	}
}

// TestGitHubReporting runs deployd with the GitHub stand-in: pushes are reported as GitHub
// deployments with their statuses, a broken push as an error, and a deployment created on
// GitHub for a commit off the branch is deployed and reported on its own id.
func TestGitHubReporting(t *testing.T) {
	gh := githubtest.New(t)
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	first := repo.Commit("main", "one", map[string]string{"deploy/manifests/cm.yaml": cm("one")})
	appNS, stateNS := env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+appNS+
		", interval: 0, environment: prod, environmentUrl: 'https://web.example.com'}\n")
	secret := writeFile(t, dir, "secret", "hook-secret\n")
	token := writeFile(t, dir, "gh-token", "gh-token\n")
	base, logs, _ := startDaemon(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"),
		"--namespace", stateNS, "--webhook-secret-file", secret, "--github-token-file", token, "--github-api-url", gh.URL,
		"--public-url", "https://deployd.example.com", "--log-format", "json")

	waitStatuses(t, gh, 1001, []string{"queued", "in_progress", "success"})
	create := gh.Calls()[0]
	if create.Body["ref"] != first || create.Body["environment"] != "prod" {
		t.Errorf("first GitHub deployment %+v", create.Body)
	}

	t.Run("a broken push is an error on GitHub", func(t *testing.T) {
		repo.Commit("main", "broken", map[string]string{"deploy/manifests/bad.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: kube-system}\n"})
		if code := signedDelivery(t, base, "hook-secret", "push", `{"ref":"refs/heads/main","repository":{"full_name":"shop/web"}}`); code != 202 {
			t.Fatalf("push answered %d", code)
		}
		waitStatuses(t, gh, 1002, []string{"queued", "in_progress", "error"})
		calls := gh.Calls()
		last := calls[len(calls)-1].Body
		if !strings.Contains(last["description"].(string), `namespace "kube-system" is not the repo's namespace`) ||
			last["log_url"] != "https://deployd.example.com/deployment/shop/web/history/2?environment=prod" {
			t.Errorf("error status %+v", last)
		}
	})
	t.Run("a GitHub deployment of a commit off the branch is deployed and reported on its id", func(t *testing.T) {
		hotfix := repo.Commit("hotfix", "hotfix", map[string]string{"deploy/manifests/bad.yaml": "", "deploy/manifests/cm.yaml": cm("hotfix")})
		body := `{"action":"created","deployment":{"id":4242,"sha":"` + hotfix + `","ref":"hotfix","environment":"prod"},"repository":{"full_name":"shop/web"}}`
		if code := signedDelivery(t, base, "hook-secret", "deployment", body); code != 202 {
			t.Fatalf("deployment event answered %d", code)
		}
		waitStatuses(t, gh, 4242, []string{"queued", "in_progress", "success"})
		c, _ := client.NewClientWithResponses(base)
		rec, err := c.GetHistoryRecordWithResponse(context.Background(), "shop", "web", 3, &client.GetHistoryRecordParams{})
		if err != nil || rec.JSON200 == nil {
			t.Fatalf("%v", err)
		}
		r := rec.JSON200
		if r.Trigger != "github-deployment" || r.Commit.Sha != hotfix || r.Note == nil || !strings.Contains(*r.Note, "of hotfix, not the configured branch main") ||
			r.GithubDeploymentId == nil || *r.GithubDeploymentId != 4242 {
			t.Errorf("record %+v\n%s", r, logs)
		}
		other := `{"action":"created","deployment":{"id":5000,"sha":"` + hotfix + `","ref":"hotfix","environment":"staging"},"repository":{"full_name":"shop/web"}}`
		if code := signedDelivery(t, base, "hook-secret", "deployment", other); code != 202 {
			t.Errorf("other environment answered %d", code)
		}
	})
	t.Run("with GitHub down the deployment still happens, and reports catch up", func(t *testing.T) {
		gh.SetDown(true)
		repo.Commit("main", "while GitHub is down", map[string]string{"deploy/manifests/bad.yaml": "", "deploy/manifests/cm.yaml": cm("github-down")})
		if code := signedDelivery(t, base, "hook-secret", "push", `{"ref":"refs/heads/main","repository":{"full_name":"shop/web"}}`); code != 202 {
			t.Fatalf("push answered %d", code)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			c, err := env.Client.CoreV1().ConfigMaps(appNS).Get(context.Background(), "settings", metav1.GetOptions{})
			if err == nil && c.Data["value"] == "github-down" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("not applied while GitHub was down:\n%s", logs)
			}
			time.Sleep(50 * time.Millisecond) // polling the cluster for a condition, with a deadline
		}
		gh.SetDown(false)
		waitStatuses(t, gh, 1003, []string{"queued", "in_progress", "success"})
	})
}
