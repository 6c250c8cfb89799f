package controller_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/source"
	"github.com/deployd/deployd/internal/webhook"
)

var manifests = map[string]string{"deploy/manifests/cm.yaml": "kind: ConfigMap\n", "README.md": "hello\n"}

// recorder is the deployer and observer the tests look at.
type recorder struct {
	mu       sync.Mutex
	deploys  []controller.Deployment
	outcomes []controller.Outcome
	inFlight map[string]int
	maxAll   int
	changed  chan struct{}
	hold     chan struct{} // when set, Deploy waits on it
}

func newRecorder() *recorder {
	return &recorder{inFlight: map[string]int{}, changed: make(chan struct{}, 1000)}
}

func (r *recorder) Deploy(ctx context.Context, d controller.Deployment) error {
	r.mu.Lock()
	r.inFlight[d.Repo.Name]++
	if r.inFlight[d.Repo.Name] > 1 {
		panic("two deploys of one repo at once")
	}
	total := 0
	for _, n := range r.inFlight {
		total += n
	}
	r.maxAll = max(r.maxAll, total)
	hold := r.hold
	r.mu.Unlock()
	if hold != nil {
		<-hold
	}
	r.mu.Lock()
	r.inFlight[d.Repo.Name]--
	r.deploys = append(r.deploys, d)
	r.mu.Unlock()
	return nil
}

func (r *recorder) observe(o controller.Outcome) {
	r.mu.Lock()
	r.outcomes = append(r.outcomes, o)
	r.mu.Unlock()
	r.changed <- struct{}{}
}

// waitFor waits until cond holds over the outcomes and deploys.
func (r *recorder) waitFor(t *testing.T, within time.Duration, what string, cond func(deploys []controller.Deployment, outcomes []controller.Outcome) bool) {
	t.Helper()
	deadline := time.After(within)
	for {
		r.mu.Lock()
		ok := cond(r.deploys, r.outcomes)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("%s: not within %v; deploys %v; outcomes %+v", what, within, commits(r.deploys), r.outcomes)
		}
	}
}

func commits(ds []controller.Deployment) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Repo.Name+"@"+d.Revision.Commit[:7]+"("+string(d.Trigger)+")")
	}
	return out
}

func deployedCommit(name, sha string) func([]controller.Deployment, []controller.Outcome) bool {
	return func(ds []controller.Deployment, _ []controller.Outcome) bool {
		for _, d := range ds {
			if d.Repo.Name == name && d.Revision.Commit == sha {
				return true
			}
		}
		return false
	}
}

type counting struct {
	*source.Source
	mu     sync.Mutex
	checks map[string]int // checks and polls
	polls  map[string]int
}

func (c *counting) Check(ctx context.Context, repo config.Repo) (source.Result, error) {
	c.mu.Lock()
	c.checks[repo.Name]++
	c.mu.Unlock()
	return c.Source.Check(ctx, repo)
}

func (c *counting) Poll(ctx context.Context, repo config.Repo) (source.Result, error) {
	c.mu.Lock()
	c.checks[repo.Name]++
	c.polls[repo.Name]++
	c.mu.Unlock()
	return c.Source.Poll(ctx, repo)
}

func (c *counting) pollCount(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.polls[name]
}

func (c *counting) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks[name]
}

type harness struct {
	ctl      *controller.Controller
	rec      *recorder
	checker  *counting
	cacheDir string
}

func start(t *testing.T, reposYAML string, opts controller.Options) *harness {
	t.Helper()
	cfg, err := config.Parse("repos.yaml", []byte(reposYAML), config.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	sopts := source.DefaultOptions()
	sopts.CacheDir = t.TempDir()
	sopts.Timeout = 5 * time.Second
	h := &harness{rec: newRecorder(), checker: &counting{Source: source.New(sopts), checks: map[string]int{}, polls: map[string]int{}}, cacheDir: sopts.CacheDir}
	opts.Observe = h.rec.observe
	h.ctl = controller.New(h.checker, h.rec, opts)
	h.ctl.SetConfig(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.ctl.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

func repoLine(name, url, extra string) string {
	return fmt.Sprintf("  - {name: %s, url: '%s', namespace: ns, environment: dev%s}\n", name, url, extra)
}

func TestStartupDeploysAndPollingFindsNewCommits(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "a/app")
	first := repo.Commit("main", "one", manifests)
	h := start(t, "repos:\n"+repoLine("a/app", srv.RepoURL("a/app"), ", interval: 200ms"), controller.DefaultOptions())

	h.rec.waitFor(t, 10*time.Second, "startup deploy", deployedCommit("a/app", first))
	if got := h.rec.deploys[0].Trigger; got != controller.TriggerStartup {
		t.Errorf("first deploy's trigger = %s, want startup", got)
	}
	if polls := h.checker.pollCount("a/app"); polls != 0 {
		t.Errorf("the startup check went through Poll (%d polls); want Check", polls)
	}
	second := repo.Commit("main", "two", map[string]string{"deploy/manifests/cm.yaml": "kind: ConfigMap\ndata: {v: '2'}\n"})
	h.rec.waitFor(t, 10*time.Second, "deploy found by polling", deployedCommit("a/app", second))
	if polls := h.checker.pollCount("a/app"); polls == 0 {
		t.Error("polls went through Check; want Poll, which answers an unmoved branch from memory")
	}
	if got := h.rec.deploys[len(h.rec.deploys)-1].Trigger; got != controller.TriggerPoll {
		t.Errorf("the polled commit's trigger = %s, want poll", got)
	}

	t.Run("a README-only commit is seen but not deployed", func(t *testing.T) {
		third := repo.Commit("main", "docs", map[string]string{"README.md": "docs\n"})
		h.rec.waitFor(t, 10*time.Second, "the docs commit seen", func(_ []controller.Deployment, os []controller.Outcome) bool {
			for _, o := range os {
				if o.Result.Commit == third && o.Action == controller.ActionNoManifestChange {
					return true
				}
			}
			return false
		})
		for _, d := range h.rec.deploys {
			if d.Revision.Commit == third {
				t.Errorf("the README-only commit was deployed")
			}
		}
	})
	t.Run("a forced sync deploys unchanged manifests", func(t *testing.T) {
		n := len(h.rec.deploys)
		if !h.ctl.Enqueue(config.Key{Name: "a/app", Environment: "dev"}, controller.Request{Trigger: controller.TriggerAPI, Force: true}) {
			t.Fatal("Enqueue refused a configured repo")
		}
		h.rec.waitFor(t, 10*time.Second, "forced deploy", func(ds []controller.Deployment, _ []controller.Outcome) bool {
			return len(ds) > n && ds[len(ds)-1].Forced && ds[len(ds)-1].Trigger == controller.TriggerAPI
		})
	})
	if h.ctl.Enqueue(config.Key{Name: "a/unknown", Environment: "dev"}, controller.Request{Trigger: controller.TriggerAPI}) {
		t.Error("Enqueue accepted an unknown repo")
	}
}

const hookSecret = "webhook-secret"

func signedPush(t *testing.T, h http.Handler, fullName string) *httptest.ResponseRecorder {
	t.Helper()
	body := []byte(fmt.Sprintf(`{"ref":"refs/heads/main","after":"x","repository":{"full_name":%q}}`, fullName))
	mac := hmac.New(sha256.New, []byte(hookSecret))
	mac.Write(body)
	req := httptest.NewRequest(http.MethodPost, "/webhooks/github", strings.NewReader(string(body)))
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func webhookHandler(t *testing.T, ctl *controller.Controller) http.Handler {
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(hookSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	return webhook.New(controller.Local(ctl), path, webhook.DefaultOptions(), nil)
}

func TestWebhooks(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "a/app")
	first := repo.Commit("main", "one", manifests)
	h := start(t, "repos:\n"+repoLine("a/app", srv.RepoURL("a/app"), ", interval: 0"), controller.DefaultOptions())
	hook := webhookHandler(t, h.ctl)
	h.rec.waitFor(t, 10*time.Second, "startup deploy", deployedCommit("a/app", first))

	t.Run("a wrongly signed push fetches nothing", func(t *testing.T) {
		repo.Commit("main", "unsigned", map[string]string{"deploy/manifests/x.yaml": "kind: Service\n"})
		srv.Requests()
		req := httptest.NewRequest(http.MethodPost, "/webhooks/github", strings.NewReader(`{"ref":"refs/heads/main","repository":{"full_name":"a/app"}}`))
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-Hub-Signature-256", "sha256=00")
		rec := httptest.NewRecorder()
		hook.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("answer %d, want 401", rec.Code)
		}
		if h.ctl.Len() != 0 || len(srv.Requests()) != 0 {
			t.Error("a refused delivery reached the queue or the git server")
		}
	})
	t.Run("a signed push fetches within a second", func(t *testing.T) {
		sha := repo.Commit("main", "signed", map[string]string{"deploy/manifests/y.yaml": "kind: Service\n"})
		sent := time.Now()
		if rec := signedPush(t, hook, "A/App"); rec.Code != http.StatusAccepted {
			t.Fatalf("answer %d %s", rec.Code, rec.Body)
		}
		h.rec.waitFor(t, time.Second, "deploy after webhook", deployedCommit("a/app", sha))
		t.Logf("push webhook to deploy call: %v", time.Since(sent))
	})
	t.Run("a burst of 20 deliveries is one or two checks", func(t *testing.T) {
		sha := repo.Commit("main", "burst", map[string]string{"deploy/manifests/z.yaml": "kind: Service\n"})
		before := h.checker.count("a/app")
		deploysBefore := len(h.rec.deploys)
		for range 20 {
			if rec := signedPush(t, hook, "a/app"); rec.Code != http.StatusAccepted {
				t.Fatalf("answer %d", rec.Code)
			}
		}
		h.rec.waitFor(t, 10*time.Second, "deploy after the burst", deployedCommit("a/app", sha))
		h.rec.waitFor(t, 10*time.Second, "queue drained", func([]controller.Deployment, []controller.Outcome) bool { return h.ctl.Len() == 0 })
		checks := h.checker.count("a/app") - before
		h.rec.mu.Lock()
		deploys := len(h.rec.deploys) - deploysBefore
		h.rec.mu.Unlock()
		if checks < 1 || checks > 2 || deploys != 1 {
			t.Errorf("20 deliveries led to %d checks and %d deploys; want 1-2 checks and 1 deploy", checks, deploys)
		}
	})
}

func TestDeadGitServerBacksOffWithoutHoldingOthers(t *testing.T) {
	down, up := gittest.NewServer(t), gittest.NewServer(t)
	downRepo, upRepo := down.NewRepo(t, "a/down"), up.NewRepo(t, "a/up")
	downSHA := downRepo.Commit("main", "one", manifests)
	upSHA := upRepo.Commit("main", "one", manifests)
	down.SetMode("down")
	opts := controller.DefaultOptions()
	opts.BackoffBase, opts.BackoffMax = 20*time.Millisecond, 400*time.Millisecond
	h := start(t, "repos:\n"+repoLine("a/down", down.RepoURL("a/down"), ", interval: 0")+repoLine("a/up", up.RepoURL("a/up"), ", interval: 0"), opts)

	h.rec.waitFor(t, 10*time.Second, "the healthy repo deployed", deployedCommit("a/up", upSHA))
	h.rec.waitFor(t, 10*time.Second, "four failed checks of the dead repo", func(_ []controller.Deployment, os []controller.Outcome) bool {
		n := 0
		for _, o := range os {
			if o.Key.Name == "a/down" && o.Action == controller.ActionCheckFailed {
				n++
			}
		}
		return n >= 4
	})
	var delays []time.Duration
	h.rec.mu.Lock()
	for _, o := range h.rec.outcomes {
		if o.Key.Name == "a/down" {
			delays = append(delays, o.RetryIn)
		}
	}
	h.rec.mu.Unlock()
	for i := 1; i < len(delays) && delays[i-1] < opts.BackoffMax; i++ {
		if delays[i] <= delays[i-1] {
			t.Errorf("backoff did not grow: %v", delays)
			break
		}
	}
	down.SetMode("")
	h.rec.waitFor(t, 10*time.Second, "recovery once the server is back", deployedCommit("a/down", downSHA))
}

func TestConcurrencyIsBounded(t *testing.T) {
	srv := gittest.NewServer(t)
	var yaml strings.Builder
	yaml.WriteString("repos:\n")
	for i := range 6 {
		name := fmt.Sprintf("a/app%d", i)
		srv.NewRepo(t, name).Commit("main", "one", manifests)
		yaml.WriteString(repoLine(name, srv.RepoURL(name), ", interval: 0"))
	}
	opts := controller.DefaultOptions()
	opts.Concurrency = 2
	cfg, _ := config.Parse("r.yaml", []byte(yaml.String()), config.DefaultOptions())
	rec := newRecorder()
	rec.hold = make(chan struct{})
	sopts := source.DefaultOptions()
	sopts.CacheDir = t.TempDir()
	opts.Observe = rec.observe
	ctl := controller.New(source.New(sopts), rec, opts)
	ctl.SetConfig(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ctl.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// With every deploy held, exactly two get in; the rest wait in the queue.
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec.mu.Lock()
		n := rec.maxAll
		rec.mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling the recorder for a condition, with a deadline
	}
	close(rec.hold)
	rec.waitFor(t, 10*time.Second, "all six deployed", func(ds []controller.Deployment, _ []controller.Outcome) bool { return len(ds) == 6 })
	if rec.maxAll != 2 {
		t.Errorf("%d deploys ran at once, want at most 2 (and 2 reached)", rec.maxAll)
	}
}

func TestConfigChanges(t *testing.T) {
	srv := gittest.NewServer(t)
	a := srv.NewRepo(t, "a/one")
	a.Commit("main", "one", manifests)
	b := srv.NewRepo(t, "a/two")
	bSHA := b.Commit("main", "one", manifests)
	h := start(t, "repos:\n"+repoLine("a/one", srv.RepoURL("a/one"), ", interval: 100ms"), controller.DefaultOptions())
	h.rec.waitFor(t, 10*time.Second, "first repo deployed", func(ds []controller.Deployment, _ []controller.Outcome) bool { return len(ds) == 1 })

	cfg, _ := config.Parse("r.yaml", []byte("repos:\n"+repoLine("a/two", srv.RepoURL("a/two"), ", interval: 0")), config.DefaultOptions())
	h.ctl.SetConfig(cfg)
	h.rec.waitFor(t, 10*time.Second, "the added repo deployed", deployedCommit("a/two", bSHA))
	if h.rec.deploys[1].Trigger != controller.TriggerConfig {
		t.Errorf("added repo's trigger = %s, want config", h.rec.deploys[1].Trigger)
	}
	// The removed repo's poll timer is stopped: its check count stays put.
	before := h.checker.count("a/one")
	a.Commit("main", "after removal", map[string]string{"deploy/manifests/n.yaml": "kind: Service\n"})
	time.Sleep(500 * time.Millisecond) // five poll intervals of the removed repo: proving an absence needs a wait
	if got := h.checker.count("a/one"); got > before+1 {
		t.Errorf("removed repo still polled: %d checks after removal", got-before)
	}
}

func TestPermanentFailureWaitsForANewCommit(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "a/app")
	bad := repo.Commit("main", "broken", map[string]string{"deploy/manifests/cm.yaml": "broken"})
	cfg, _ := config.Parse("r.yaml", []byte("repos:\n"+repoLine("a/app", srv.RepoURL("a/app"), ", interval: 50ms")), config.DefaultOptions())
	rec := newRecorder()
	var mu sync.Mutex
	attempts := map[string]int{}
	deployer := controller.DeployFunc(func(ctx context.Context, d controller.Deployment) error {
		mu.Lock()
		attempts[d.Revision.Commit]++
		mu.Unlock()
		if d.Revision.Commit == bad {
			return controller.Permanent(fmt.Errorf("deploy/manifests/cm.yaml:1: not a manifest"))
		}
		return rec.Deploy(ctx, d)
	})
	sopts := source.DefaultOptions()
	sopts.CacheDir = t.TempDir()
	opts := controller.DefaultOptions()
	opts.Observe = rec.observe
	ctl := controller.New(source.New(sopts), deployer, opts)
	ctl.SetConfig(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ctl.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	rec.waitFor(t, 10*time.Second, "several polls after the failure", func(_ []controller.Deployment, os []controller.Outcome) bool {
		n := 0
		for _, o := range os {
			if o.Action == controller.ActionFailedBefore {
				n++
			}
		}
		return n >= 3
	})
	mu.Lock()
	if attempts[bad] != 1 {
		t.Errorf("the broken commit was deployed %d times, want once", attempts[bad])
	}
	mu.Unlock()
	fixed := repo.Commit("main", "fixed", map[string]string{"deploy/manifests/cm.yaml": "kind: ConfigMap\n"})
	rec.waitFor(t, 10*time.Second, "the fix deployed", deployedCommit("a/app", fixed))
}
