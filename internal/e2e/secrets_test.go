package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deployd/deployd/internal/githubtest"
	"github.com/deployd/deployd/internal/gittest"
)

// TestNoSecretEscapes deploys a Secret from a repo that needs a git token, with GitHub
// reporting on, then looks for every secret value in everything deployd emitted: its
// log, every API response, /metrics and what it sent to GitHub.
func TestNoSecretEscapes(t *testing.T) {
	const (
		secretValue = "sup3r-s3cret-passw0rd"
		gitToken    = "git-t0ken-value-xyz"
		ghToken     = "gh-t0ken-value-abc"
		hookSecret  = "h00k-secret-value"
		apiToken    = "api-t0ken-value"
	)
	gh := githubtest.New(t)
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/vault")
	repo.Commit("main", "secret", map[string]string{"deploy/manifests/secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {password: " + secretValue + "}\n" +
		"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\ndata: {a: b}\n"})
	srv.Token = gitToken
	ns, state := env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	write := writer(t, dir)
	write("git-token", gitToken)
	cfg := write("repos.yaml", "repos:\n  - {name: shop/vault, url: '"+srv.RepoURL("shop/vault")+"', namespace: "+ns+", environment: prod, interval: 0, auth: {tokenFile: git-token}}\n")
	d := startBinary(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"), "--namespace", state,
		"--webhook-secret-file", write("hook", hookSecret), "--github-token-file", write("gh", ghToken), "--github-api-url", gh.URL,
		"--api-token-file", write("api", apiToken), "--log-level", "debug")

	base := "http://" + d.addr
	get := func(path string) string {
		resp, err := http.Get(base + path)
		if err != nil {
			return "" // not listening yet
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(get("/deployment/shop/vault"), `"phase":"succeeded"`) {
		if time.Now().After(deadline) {
			t.Fatalf("not deployed:\n%s", d.logs)
		}
		time.Sleep(100 * time.Millisecond) // polling the binary's API, with a deadline
	}
	for len(gh.Statuses(1001)) < 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // polling the stand-in, with a deadline
	}
	emitted := map[string]string{
		"status":  get("/deployment/shop/vault"),
		"history": get("/deployment/shop/vault/history"),
		"record":  get("/deployment/shop/vault/history/1"),
		"secret":  get("/deployment/shop/vault/objects/Secret/creds"),
		"list":    get("/deployments"),
		"config":  get("/config"),
		"metrics": get("/metrics"),
		"openapi": get("/openapi.json"),
		"readyz":  get("/readyz"),
	}
	var bodies []map[string]any // the token rightly goes to GitHub in the Authorization header; the bodies carry none
	for _, c := range gh.Calls() {
		bodies = append(bodies, c.Body)
	}
	calls, _ := json.Marshal(bodies)
	emitted["github call bodies"] = string(calls)
	// The state ConfigMaps are deployd's output too.
	cms, _ := env.Client.CoreV1().ConfigMaps(state).List(context.Background(), metav1.ListOptions{})
	b, _ := json.Marshal(cms)
	emitted["state ConfigMaps"] = string(b)
	_ = d.cmd.Process.Signal(os.Interrupt)
	<-d.logDone
	emitted["log"] = d.logs.String()

	if !strings.Contains(emitted["secret"], "<redacted>") {
		t.Errorf("the Secret endpoint did not redact: %s", emitted["secret"])
	}
	for what, text := range emitted {
		for _, s := range []string{secretValue, gitToken, ghToken, hookSecret, apiToken, "c3VwM3ItczNjcmV0"} { // last: base64 of the value's start
			if strings.Contains(text, s) {
				t.Errorf("%s contains %q", what, s)
			}
		}
	}
}
