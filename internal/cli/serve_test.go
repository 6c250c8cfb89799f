package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/daemon"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/logtest"
)

const childEnv = "DEPLOYD_CLI_TEST_CHILD_ARGS"

// startDaemon runs the daemon on a free port until the test ends.
func startDaemon(t *testing.T, args ...string) (base string, logs *logtest.Buffer, stop func() error) {
	t.Helper()
	return startDaemonWith(t, nil, args...)
}

// startDaemonWith is startDaemon with a hook that changes the daemon's options.
func startDaemonWith(t *testing.T, hook func(*daemon.Options), args ...string) (base string, logs *logtest.Buffer, stop func() error) {
	t.Helper()
	logs = &logtest.Buffer{}
	addr := make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, append(args, "--listen", "127.0.0.1:0"), io.Discard, logs, func(o *daemon.Options) {
			o.ProbeInterval = 200 * time.Millisecond
			o.Listening = func(a net.Addr) { addr <- a }
			if hook != nil {
				hook(o)
			}
		})
	}()
	select {
	case a := <-addr:
		base = "http://" + a.String()
	case err := <-done:
		cancel()
		t.Fatalf("daemon did not start: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("daemon did not listen within 30s:\n%s", logs)
	}
	var once sync.Once
	var stopErr error
	stop = func() error {
		once.Do(func() { cancel(); stopErr = <-done })
		return stopErr
	}
	t.Cleanup(func() { _ = stop() })
	return base, logs, stop
}

// waitStatus polls url until it answers want with a body containing contains.
func waitStatus(t *testing.T, url string, want int, contains string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want && strings.Contains(string(b), contains) {
				return string(b)
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s = %d %q, want %d with %q", url, resp.StatusCode, b, want, contains)
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond) // polling the endpoint under test, with a deadline
	}
}

func TestServeHealthAndReadiness(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: a/b, url: 'https://h/a/b', namespace: ns}\n")
	base, logs, stop := startDaemon(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"), "--log-format", "json")

	if body := waitStatus(t, base+"/healthz", 200, ""); body != "ok\n" {
		t.Errorf("/healthz body %q", body)
	}
	body := waitStatus(t, base+"/readyz", 200, "")
	if !strings.Contains(body, "[+]config ok") || !strings.Contains(body, "[+]cluster ok") || !strings.Contains(body, "[+]caches ok") {
		t.Errorf("/readyz body %q", body)
	}

	t.Run("a config change is reloaded and logged", func(t *testing.T) {
		writeFile(t, dir, "repos.yaml", "repos:\n  - {name: a/b, url: 'https://h/a/b', namespace: ns}\n  - {name: a/c, url: 'https://h/a/c', namespace: ns}\n")
		waitLog(t, logs, func(rec map[string]any) bool {
			added, _ := rec["added"].([]any)
			return rec["msg"] == "config reloaded" && len(added) == 1 && added[0] == "a/c@production"
		})
	})
	t.Run("a bad change is refused with its line", func(t *testing.T) {
		writeFile(t, dir, "repos.yaml", "repos:\n  - {name: a/b, url: 'https://h/a/b', namespace: NS}\n")
		waitLog(t, logs, func(rec map[string]any) bool {
			p, _ := rec["problem"].(string)
			return rec["msg"] == "config reload refused, keeping the last good config" && strings.Contains(p, "repos.yaml:2: repos[0].namespace")
		})
	})
	if _, err := os.Stat(filepath.Join(dir, "cache")); err != nil {
		t.Errorf("cache dir not created: %v", err)
	}
	if err := stop(); err != nil {
		t.Errorf("shutdown returned %v, want nil", err)
	}
	if !strings.Contains(logs.String(), `"msg":"stopped"`) {
		t.Errorf("no clean stop in the log:\n%s", logs)
	}
}

func waitLog(t *testing.T, logs *logtest.Buffer, match func(map[string]any) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil && match(rec) {
				return
			}
		}
		time.Sleep(20 * time.Millisecond) // polling the log for a condition, with a deadline
	}
	t.Fatalf("no matching log line within 5s:\n%s", logs)
}

func TestReadyzFailsWhenTheClusterIsUnreachable(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos: []\n")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := l.Addr().String()
	l.Close()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: dead, cluster: {server: "https://%s", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: secret-token-value}}]
contexts: [{name: dead, context: {cluster: dead, user: u}}]
current-context: dead
`, deadAddr)), 0o600)
	base, logs, _ := startDaemon(t, "--config", cfg, "--kubeconfig", kubeconfig, "--cache-dir", filepath.Join(dir, "cache"))
	body := waitStatus(t, base+"/readyz", http.StatusServiceUnavailable, "[-]cluster failed: cluster not reachable")
	if !strings.Contains(body, "[+]config ok") {
		t.Errorf("/readyz body %q", body)
	}
	waitStatus(t, base+"/healthz", 200, "ok")
	if strings.Contains(logs.String(), "secret-token-value") {
		t.Errorf("the kubeconfig token was logged:\n%s", logs)
	}
}

func TestListenAddressInUseFailsAtOnce(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos: []\n")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	code, _, errOut := runCLI(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--listen", l.Addr().String(), "--cache-dir", filepath.Join(dir, "c"))
	if code != 1 || !strings.Contains(errOut, "listening on "+l.Addr().String()) || !strings.Contains(errOut, "address already in use") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

// TestSIGTERMExitsZero runs deployd as its own process and stops it the way Kubernetes does.
func TestSIGTERMExitsZero(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos: []\n")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=--config "+cfg+" --kubeconfig "+env.Kubeconfig+
		" --listen 127.0.0.1:0 --log-format json --cache-dir "+filepath.Join(dir, "cache"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	var log strings.Builder
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), `"msg":"deployd started"`) {
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go io.Copy(&log, stderr)
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("deployd exited with %v after SIGTERM, want 0:\n%s", err, log.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("deployd did not exit within 30s of SIGTERM")
	}
}

// TestWebhookThroughTheDaemon sends a signed push to a running deployd and sees the
// new commit deployed, by the webhook.
func TestWebhookThroughTheDaemon(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	repo.Commit("main", "one", map[string]string{"deploy/manifests/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n"})
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+env.Namespace(t)+", interval: 0}\n")
	secret := writeFile(t, dir, "secret", "hook-secret\n")
	base, logs, _ := startDaemon(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"),
		"--namespace", env.Namespace(t), "--webhook-secret-file", secret, "--log-format", "json")

	want := func(trigger controller.Trigger, sha string) {
		t.Helper()
		waitLog(t, logs, func(rec map[string]any) bool {
			return rec["msg"] == "deployment" && rec["phase"] == "queued" && rec["trigger"] == string(trigger) && rec["commit"] == sha
		})
	}
	first, _ := exec.Command("git", "--git-dir", repo.Bare, "rev-parse", "main").Output()
	want(controller.TriggerStartup, strings.TrimSpace(string(first)))

	sha := repo.Commit("main", "two", map[string]string{"deploy/manifests/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {a: b}\n"})
	pushHook(t, base, "hook-secret", "shop/web")
	want(controller.TriggerWebhook, sha)
}
