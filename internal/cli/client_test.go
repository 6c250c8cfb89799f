package cli

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/logtest"
)

// TestClientCommands drives the pipeline commands against a running deployd.
func TestClientCommands(t *testing.T) {
	srv := gittest.NewServer(t)
	good := srv.NewRepo(t, "shop/web").Commit("main", "v1", map[string]string{"deploy/manifests/app.yaml": strings.Replace(apiManifests, "replicas: 3", "replicas: 2", 1)})
	broken := stuckDeployment(2)
	bad := srv.NewRepo(t, "shop/crash").Commit("main", "crash", map[string]string{"deploy/manifests/app.yaml": broken})
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n"+
		"  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+env.Namespace(t)+", interval: 0}\n"+
		"  - {name: shop/crash, url: '"+srv.RepoURL("shop/crash")+"', namespace: "+env.Namespace(t)+", interval: 0}\n")
	token := writeFile(t, dir, "token", "cli-token\n")
	base, _, _ := startDaemon(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"),
		"--namespace", env.Namespace(t), "--api-token-file", token, "--api-max-streams-per-client", "1")
	server := "--server=" + base

	t.Run("wait exits 0 when the commit rolled out", func(t *testing.T) {
		code, out, errOut := runCLI(t, "wait", "shop/web", "--commit", good[:10], server)
		if code != 0 || !strings.Contains(out, "deployment-0001 "+good[:12]+": succeeded") {
			t.Errorf("exit %d\n%s\n%s", code, out, errOut)
		}
	})
	t.Run("wait exits 1 with the reason when the rollout fails", func(t *testing.T) {
		code, out, errOut := runCLI(t, "wait", "shop/crash", "--commit", bad, server)
		if code != 1 || !strings.Contains(errOut, "deployment failed: Deployment web: ProgressDeadlineExceeded") {
			t.Errorf("exit %d\n%s\n%s", code, out, errOut)
		}
	})
	t.Run("wait exits 3 when deployd cannot be reached", func(t *testing.T) {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		gone := "http://" + l.Addr().String()
		l.Close()
		code, _, errOut := runCLI(t, "wait", "shop/web", "--commit", good, "--server", gone, "--timeout", "2s")
		if code != 3 || !strings.Contains(errOut, "could not reach") {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
	t.Run("wait tries again while deployd serves as many streams as it may", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/events", nil)
		held, err := http.DefaultClient.Do(req) // this client's one stream
		if err != nil || held.StatusCode != http.StatusOK {
			t.Fatalf("holding a stream: %v %v", err, held)
		}
		defer held.Body.Close()
		code, out, errOut := runCLI(t, "wait", "shop/web", "--commit", strings.Repeat("0", 40), server, "--timeout", "2s")
		if code == 0 || !strings.Contains(out, "503") || !strings.Contains(out, "reconnecting") {
			t.Errorf("exit %d\n%s\n%s", code, out, errOut)
		}
	})
	t.Run("status prints a table", func(t *testing.T) {
		code, out, errOut := runCLI(t, "status", "shop/web", server)
		if code != 0 || !strings.Contains(out, "phase succeeded") || !strings.Contains(out, "Deployment  web") || !strings.Contains(out, "2/2") {
			t.Errorf("exit %d\n%s\n%s", code, out, errOut)
		}
		if code, out, _ := runCLI(t, "status", "shop/web", server, "-o", "json"); code != 0 || !strings.HasPrefix(out, `{"repo":"shop/web"`) {
			t.Errorf("json: exit %d %s", code, out)
		}
	})
	t.Run("sync needs the token", func(t *testing.T) {
		code, _, errOut := runCLI(t, "sync", "shop/web", server)
		if code != 1 || !strings.Contains(errOut, "401") {
			t.Errorf("without token: exit %d %s", code, errOut)
		}
		code, out, errOut := runCLI(t, "sync", "shop/web", server, "--token-file", token, "--force")
		if code != 0 || !strings.Contains(out, "forced deployment of shop/web") {
			t.Errorf("with token: exit %d %s %s", code, out, errOut)
		}
	})
	t.Run("bad usage exits 3", func(t *testing.T) {
		if code, _, errOut := runCLI(t, "status", "not-a-repo", server); code != 3 || !strings.Contains(errOut, "OWNER/REPO") {
			t.Errorf("exit %d %s", code, errOut)
		}
		if code, _, _ := runCLI(t, "wait", "shop/web", server); code != 3 {
			t.Errorf("wait without --commit: exit %d", code)
		}
	})
}

// TestWaitWhenDeploydGoesAway: deployd stops mid-wait; wait keeps reconnecting and exits 3
// at its timeout.
func TestWaitWhenDeploydGoesAway(t *testing.T) {
	srv := gittest.NewServer(t)
	stuck := stuckDeployment(600)
	sha := srv.NewRepo(t, "shop/slow").Commit("main", "slow", map[string]string{"deploy/manifests/app.yaml": stuck})
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/slow, url: '"+srv.RepoURL("shop/slow")+"', namespace: "+env.Namespace(t)+", interval: 0, timeout: 10m}\n")
	base, _, stop := startDaemon(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"), "--namespace", env.Namespace(t))

	type result struct {
		code     int
		out, err string
	}
	done := make(chan result, 1)
	var out logtest.Buffer
	go func() {
		var errOut strings.Builder
		err := Run(context.Background(), []string{"wait", "shop/slow", "--commit", sha, "--server", base, "--timeout", "8s"}, &out, &errOut)
		var exit *ExitError
		code := 0
		if errors.As(err, &exit) {
			code = exit.Code
		}
		done <- result{code, out.String(), errOut.String()}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), ": waiting") {
		if time.Now().After(deadline) {
			t.Fatalf("wait never saw the deployment waiting: %s", out.String())
		}
		time.Sleep(50 * time.Millisecond) // polling the command's output, with a deadline
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.code != 3 || !strings.Contains(r.out, "reconnecting") || !strings.Contains(r.err, "could not reach") {
		t.Errorf("exit %d\nout: %s\nerr: %s", r.code, r.out, r.err)
	}
}
