package dashboard_test

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deployd/deployd/internal/daemon"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/logtest"
	"github.com/deployd/deployd/internal/simcluster"
)

var env *simcluster.Env

func TestMain(m *testing.M) { os.Exit(simcluster.Main(m, &env)) }

// chromium finds the browser; a machine without it fails the test and says how to get it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("DEPLOYD_CHROMIUM"), "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	t.Fatal("the dashboard's browser test needs Chromium, and none is installed: apt-get install chromium " +
		"(or set DEPLOYD_CHROMIUM to a Chromium or Chrome binary)")
	return ""
}

// browser starts a headless Chromium for the test. The flags keep it off the network:
// on a machine without one, its background fetches would otherwise hang on refused connections.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting %s: %v", chromium(t), err)
	}
	return ctx
}

// startDeployd runs deployd until the test ends and returns its base URL; hook, if
// given, changes its options.
func startDeployd(t *testing.T, cfg, secret string, hook func(*daemon.Options)) (string, *logtest.Buffer) {
	t.Helper()
	logs := &logtest.Buffer{}
	opts := daemon.DefaultOptions()
	opts.ConfigPath, opts.Kube.Kubeconfig, opts.Listen = cfg, env.Kubeconfig, "127.0.0.1:0"
	opts.CacheDir, opts.Namespace, opts.WebhookSecretFile = filepath.Join(t.TempDir(), "cache"), env.Namespace(t), secret
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	addr := make(chan net.Addr, 1)
	opts.Listening = func(a net.Addr) { addr <- a }
	if hook != nil {
		hook(&opts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- daemon.Run(ctx, opts) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case a := <-addr:
		return "http://" + a.String(), logs
	case err := <-done:
		t.Fatalf("deployd did not start: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("deployd did not listen within 30s:\n%s", logs)
	}
	return "", nil
}

// deploymentEvent is what the test reads of the all-repos stream.
type deploymentEvent struct {
	Repo   string `json:"repo"`
	Record struct {
		Phase  string `json:"phase"`
		Commit struct {
			SHA string `json:"sha"`
		} `json:"commit"`
	} `json:"record"`
	at time.Time
}

// follow reads deployd's /events as the page does and hands over each deployment event
// with the time it arrived: when deployd recorded it, give or take the loopback.
func follow(t *testing.T, base string) <-chan deploymentEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("GET /events: %v %v", err, resp)
	}
	out := make(chan deploymentEvent, 64)
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); resp.Body.Close(); wg.Wait() })
	wg.Go(func() {
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			if e, ok := strings.CutPrefix(line, "event: "); ok {
				event = e
			}
			if d, ok := strings.CutPrefix(line, "data: "); ok && event == "deployment" {
				ev := deploymentEvent{at: time.Now()}
				if json.Unmarshal([]byte(d), &ev) == nil {
					out <- ev
				}
			}
		}
	})
	return out
}

// await returns the first event that matches, or fails after a minute.
func await(t *testing.T, events <-chan deploymentEvent, what string, ok func(deploymentEvent) bool) deploymentEvent {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case ev, open := <-events:
			if !open {
				t.Fatalf("%s: the event stream ended", what)
			}
			if ok(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("%s: no such event within a minute", what)
		}
	}
}

func pushHook(t *testing.T, base, secret, fullName string) {
	t.Helper()
	body := `{"ref":"refs/heads/main","repository":{"full_name":"` + fullName + `"}}`
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	req, _ := http.NewRequest(http.MethodPost, base+"/webhooks/github", strings.NewReader(body))
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("push webhook: %v %v", err, resp)
	}
	resp.Body.Close()
}

// artifact saves b where the test's artifacts go ($DEPLOYD_TEST_ARTIFACTS, else a
// directory under the temp dir that outlives the test) and logs the path.
func artifact(t *testing.T, name string, b []byte) {
	t.Helper()
	dir := os.Getenv("DEPLOYD_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "deployd-test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("artifact: %s", path)
}

// pollPage waits until expression is true in the page, at most until deadline.
func pollPage(t *testing.T, ctx context.Context, what, expression string, deadline time.Time) {
	t.Helper()
	timeout := time.Until(deadline)
	if timeout < 50*time.Millisecond {
		timeout = 50 * time.Millisecond
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expression, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("%s: %v; the page says:\n%s", what, err, text)
	}
}

// TestDashboardInBrowser loads the page in a real Chromium against a real deployd: it
// lists both sample apps, follows a push without a reload, and can be used by keyboard.
func TestDashboardInBrowser(t *testing.T) {
	ctx := browser(t)
	srv := gittest.NewServer(t)
	apps := []string{"haraldsk/an-application", "haraldsk/an-other-application"}
	heads := map[string]string{}
	repos := map[string]*gittest.Repo{}
	dir := t.TempDir()
	cfg := "repos:\n"
	for _, name := range apps {
		repos[name] = srv.NewRepo(t, name)
		heads[name] = repos[name].Commit("main", "v1", gittest.SampleAppFiles("v1"))
		cfg += fmt.Sprintf("  - {name: %s, url: '%s', namespace: %s, environment: dev, interval: 0, drift: report}\n", name, srv.RepoURL(name), env.Namespace(t))
	}
	cfgPath, secret := filepath.Join(dir, "repos.yaml"), filepath.Join(dir, "secret")
	for path, content := range map[string]string{cfgPath: cfg, secret: "hook-secret\n"} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base, logs := startDeployd(t, cfgPath, secret, nil)
	events := follow(t, base)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("deployd's log:\n%s", logs)
		}
	})
	row := func(name string) string { return `document.querySelector('tr[data-repo="` + name + `"]')` }

	t.Run("shows both sample apps with their deployed commit", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
			t.Fatal(err)
		}
		for _, name := range apps {
			pollPage(t, ctx, name+" rolled out", row(name)+`?.querySelector('[data-label="Commit"] code')?.dataset.sha === "`+heads[name]+`" && `+
				row(name)+`.querySelector('[data-label="Phase"]').textContent.includes("succeeded") && `+
				row(name)+`.querySelector('meter')?.value === 2`, time.Now().Add(time.Minute))
		}
	})

	t.Run("shows a pushed commit within 2 seconds of deployd recording it, without a reload", func(t *testing.T) {
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.sameDocument = true`)); err != nil {
			t.Fatal(err)
		}
		name := apps[0]
		v2 := repos[name].Commit("main", "v2", gittest.SampleAppFiles("v2"))
		pushHook(t, base, "hook-secret", name)
		recorded := await(t, events, "v2 recorded", func(ev deploymentEvent) bool { return ev.Record.Commit.SHA == v2 })
		pollPage(t, ctx, "the page shows v2 once deployd recorded it", row(name)+`?.querySelector('[data-sha="`+v2+`"]') !== null`, recorded.at.Add(2*time.Second))
		done := await(t, events, "v2 rolled out", func(ev deploymentEvent) bool { return ev.Record.Commit.SHA == v2 && ev.Record.Phase == "succeeded" })
		pollPage(t, ctx, "the page shows v2 deployed and succeeded", row(name)+`?.querySelector('[data-label="Commit"] code')?.dataset.sha === "`+v2+`" && `+
			row(name)+`.querySelector('[data-label="Phase"]').textContent.includes("succeeded")`, done.at.Add(2*time.Second))
		if same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.sameDocument === true`)); err != nil || !same {
			t.Errorf("the page was reloaded (%v)", err)
		}
		shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		artifact(t, "dashboard-overview.png", shot)
	})

	t.Run("the repo page is reached by keyboard and shows objects and history", func(t *testing.T) {
		name := apps[0]
		// Tab from the top of the page until the repo's link has focus, then follow it with Enter.
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`)); err != nil {
			t.Fatal(err)
		}
		var focused []string
		for range 20 {
			if err := chromedp.Do(ctx, chromedp.KeyEvent("\t")); err != nil {
				t.Fatal(err)
			}
			got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.activeElement.getAttribute("href") || document.activeElement.tagName`))
			if err != nil {
				t.Fatal(err)
			}
			focused = append(focused, got)
			if got == "#/"+name {
				break
			}
		}
		if focused[len(focused)-1] != "#/"+name {
			t.Fatalf("Tab never reached the link to %s; focus went: %v", name, focused)
		}
		if focused[0] != "#main" {
			t.Errorf("the first Tab stop is %q, want the skip link", focused[0])
		}
		if err := chromedp.Do(ctx, chromedp.KeyEvent("\r")); err != nil {
			t.Fatal(err)
		}
		pollPage(t, ctx, "the repo page shows its objects and history",
			`location.hash === "#/`+name+`" && document.querySelector("h1")?.textContent === "`+name+`" && `+
				`document.body.innerText.includes("deployment-0002") && `+
				`[...document.querySelectorAll('td[data-label="Name"]')].some((td) => td.textContent === "settings") && `+
				`[...document.querySelectorAll('td[data-label="Duration"]')].every((td) => /^\d+(s|m \d+s)$/.test(td.textContent))`,
			time.Now().Add(10*time.Second))
		shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		artifact(t, "dashboard-repo.png", shot)
	})

	t.Run("shows drift live: the repo out of sync, and which field who changed", func(t *testing.T) {
		name := apps[1]
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
			t.Fatal(err)
		}
		pollPage(t, ctx, name+" in sync", row(name)+` !== null && !`+row(name)+`.querySelector('[data-drift]')`, time.Now().Add(10*time.Second))
		// A hand edit, as kubectl edit makes it: with drift: report, deployd shows it and leaves it.
		ns := namespaceOf(t, cfg, name)
		cms := env.Client.CoreV1().ConfigMaps(ns)
		cm, err := cms.Get(t.Context(), "settings", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for k := range cm.Data {
			cm.Data[k] = "edited by hand"
		}
		if _, err := cms.Update(t.Context(), cm, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
			t.Fatal(err)
		}
		pollPage(t, ctx, "the overview shows "+name+" out of sync, without a reload",
			row(name)+`?.querySelector('[data-drift]')?.textContent.includes("out of sync")`, time.Now().Add(10*time.Second))
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/#/"+name)); err != nil {
			t.Fatal(err)
		}
		pollPage(t, ctx, "the repo page names the drifted field and its writer",
			`[...document.querySelectorAll('[data-drift]')].some((s) => s.textContent.includes("drifted: .data.") && s.textContent.includes("by kubectl-edit"))`,
			time.Now().Add(10*time.Second))
	})

	t.Run("is readable on a phone", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Navigate(base+"/#/")); err != nil {
			t.Fatal(err)
		}
		pollPage(t, ctx, "the overview on a phone", row(apps[1])+` !== null && document.documentElement.scrollWidth <= 390`, time.Now().Add(10*time.Second))
		shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		artifact(t, "dashboard-phone.png", shot)
	})

	t.Run("under --api-read-auth the page asks for the token, then shows the deployments", func(t *testing.T) {
		token := filepath.Join(dir, "token")
		if err := os.WriteFile(token, []byte("read-token\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		empty := filepath.Join(dir, "empty.yaml")
		if err := os.WriteFile(empty, []byte("repos: []\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		guarded, _ := startDeployd(t, empty, secret, func(o *daemon.Options) { o.APITokenFile, o.APIReadAuth = token, true })
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800), chromedp.Navigate(guarded+"/")); err != nil {
			t.Fatal(err)
		}
		pollPage(t, ctx, "the page asks for the token", `document.querySelector("label[for=token]") !== null && document.body.innerText.includes("--api-read-auth")`, time.Now().Add(10*time.Second))
		if err := chromedp.Do(ctx, chromedp.SendKeys("#token", "wrong\r")); err != nil {
			t.Fatal(err)
		}
		pollPage(t, ctx, "a wrong token is refused", `document.body.innerText.includes("was refused")`, time.Now().Add(10*time.Second))
		if err := chromedp.Do(ctx, chromedp.SendKeys("#token", "read-token\r")); err != nil {
			t.Fatal(err)
		}
		pollPage(t, ctx, "the token opens the page and its event stream", `document.body.innerText.includes("No repos in deployd's config yet.") && `+
			`document.getElementById("live").textContent.startsWith("Live") && !document.getElementById("forget").hidden`, time.Now().Add(10*time.Second))
	})

	t.Run("links a commit on GitHub when the repo is on GitHub", func(t *testing.T) {
		for url, want := range map[string]string{
			"https://github.com/haraldsk/an-application.git": "https://github.com/haraldsk/an-application/commit/abc",
			"git@github.com:haraldsk/an-application.git":     "https://github.com/haraldsk/an-application/commit/abc",
			srv.RepoURL(apps[0]):                             "",
		} {
			got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`githubCommit(`+jsString(url)+`, "abc") || ""`))
			if err != nil || got != want {
				t.Errorf("githubCommit(%s) = %q %v, want %q", url, got, err, want)
			}
		}
	})
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// namespaceOf finds repo's namespace in the repos.yaml the test wrote.
func namespaceOf(t *testing.T, cfg, repo string) string {
	t.Helper()
	for _, line := range strings.Split(cfg, "\n") {
		if strings.Contains(line, "name: "+repo+",") {
			_, rest, _ := strings.Cut(line, "namespace: ")
			ns, _, _ := strings.Cut(rest, ",")
			return ns
		}
	}
	t.Fatalf("no namespace for %s in %s", repo, cfg)
	return ""
}
