package preview

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/source"
)

// fakeGit serves each ref's commit and every commit's manifests from maps.
type fakeGit struct {
	mu      sync.Mutex
	heads   map[string]string // ref → commit
	fetched []string
}

func (g *fakeGit) FetchRef(ctx context.Context, repo config.Repo, ref string) (source.Revision, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fetched = append(g.fetched, ref)
	c, ok := g.heads[ref]
	if !ok {
		return source.Revision{}, errors.New(ref + " not found on the remote")
	}
	return source.Revision{Commit: c}, nil
}

func (g *fakeGit) Files(repo config.Repo, commit, dir string, lim source.Limits) (map[string][]byte, error) {
	return map[string][]byte{"deploy/manifests/cm.yaml": []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + commit + "}\n")}, nil
}

// addsAll dry-runs every object as new.
type addsAll struct{}

func (addsAll) DryRun(ctx context.Context, req apply.Request) (apply.DryRunResult, error) {
	var out apply.DryRunResult
	for _, o := range req.Objects {
		out.Objects = append(out.Objects, apply.Planned{Object: apply.Ref{Version: "v1", Kind: o.GetKind(), Namespace: req.Repo.Namespace, Name: o.GetName()}, Source: o.Source, After: o.Unstructured})
	}
	return out, nil
}

// recorder is a Publisher that records what it was given.
type recorder struct {
	mu       sync.Mutex
	reports  []Report
	removals []string
}

func (r *recorder) Publish(ctx context.Context, rep Report) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, rep)
	return nil
}

func (r *recorder) Remove(ctx context.Context, owner, repo string, number int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removals = append(r.removals, fmt.Sprintf("%s/%s#%d", owner, repo, number))
	return nil
}

var entry = config.Repo{Name: "shop/web", Environment: "prod", Namespace: "shop", Settings: config.Settings{Path: "deploy/manifests", Branch: "main"}}

func pr(n int, sha string) PullRequest {
	return PullRequest{Repo: "shop/web", Number: n, HeadSHA: sha, Entries: []config.Repo{entry}}
}

// start runs s until the test ends; done receives each preview stored.
func start(t *testing.T, opts Options, git *fakeGit, pub Publisher) (*Service, chan string) {
	done := make(chan string, 100)
	opts.Done = func(repo string, number int, res Result) { done <- fmt.Sprintf("#%d %s", number, res.Commit) }
	s := New(git, addsAll{}, pub, opts)
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	go func() { s.Run(ctx); close(finished) }()
	t.Cleanup(func() { cancel(); <-finished })
	return s, done
}

func next(t *testing.T, done chan string) string {
	t.Helper()
	select {
	case d := <-done:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no preview within 10s")
		return ""
	}
}

func TestPreviewsCoalescePerPullRequest(t *testing.T) {
	git := &fakeGit{heads: map[string]string{"refs/pull/1/head": "bbb"}}
	opts := DefaultOptions()
	opts.PublicURL = "https://deployd.example.com"
	// Deployments are waiting while both events arrive: the preview waits, and runs once.
	busy := make(chan struct{})
	opts.Busy = func() bool {
		select {
		case <-busy:
			return false
		default:
			return true
		}
	}
	pub := &recorder{}
	s, done := start(t, opts, git, pub)
	s.Enqueue(pr(1, "aaa"))
	s.Enqueue(pr(1, "bbb"))
	if p, ok := s.Get("shop/web", 1); !ok || p.HeadSHA != "bbb" || p.Environments[0].State != StatePending {
		t.Errorf("waiting preview %+v %v", p, ok)
	}
	close(busy)
	if got := next(t, done); got != "#1 bbb" {
		t.Errorf("previewed %s", got)
	}
	p, _ := s.Get("shop/web", 1)
	if diff := cmp.Diff([]ChangedObject{{Object: "ConfigMap/shop/bbb", APIVersion: "v1", Source: "deploy/manifests/cm.yaml:1"}}, p.Environments[0].Added); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	git.mu.Lock()
	fetched := git.fetched
	git.mu.Unlock()
	if diff := cmp.Diff([]string{"refs/pull/1/head"}, fetched); diff != "" {
		t.Errorf("fetched (-want +got)\n%s", diff)
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if len(pub.reports) != 1 {
		t.Fatalf("published %d reports, want 1", len(pub.reports))
	}
	r := pub.reports[0]
	r.Summary = ""
	want := Report{Owner: "shop", Repo: "web", Environment: "prod", HeadSHA: "bbb", PRNumber: 1, Conclusion: "success",
		Title: "1 to add, 0 to change, 0 to prune, 0 unchanged", DetailsURL: "https://deployd.example.com/deployment/shop/web/previews/1?environment=prod"}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("report (-want +got)\n%s", diff)
	}
}

func TestPreviewsAreBounded(t *testing.T) {
	t.Run("the least recently updated past MaxPerRepo are forgotten", func(t *testing.T) {
		opts := DefaultOptions()
		opts.MaxPerRepo = 2
		s := New(&fakeGit{}, addsAll{}, nil, opts)
		for n := 1; n <= 3; n++ {
			s.Enqueue(pr(n, "sha"))
		}
		var got []int
		for _, p := range s.List("Shop/Web") {
			got = append(got, p.Number)
		}
		if diff := cmp.Diff([]int{2, 3}, got); diff != "" {
			t.Errorf("kept (-want +got)\n%s", diff)
		}
	})
	t.Run("past MaxTotal, across repos", func(t *testing.T) {
		opts := DefaultOptions()
		opts.MaxTotal = 2
		s := New(&fakeGit{}, addsAll{}, nil, opts)
		s.Enqueue(pr(1, "sha"))
		other := pr(2, "sha")
		other.Repo = "shop/api"
		s.Enqueue(other)
		s.Enqueue(pr(3, "sha"))
		if _, ok := s.Get("shop/web", 1); ok || len(s.List("shop/api"))+len(s.List("shop/web")) != 2 {
			t.Errorf("kept %v and %v", s.List("shop/api"), s.List("shop/web"))
		}
	})
	t.Run("past MaxPending the oldest waiting is dropped", func(t *testing.T) {
		opts := DefaultOptions()
		opts.MaxPending = 2
		var dropped []string
		opts.Failed = func(repo string, number int, err error) {
			dropped = append(dropped, fmt.Sprintf("#%d: %v", number, err))
		}
		s := New(&fakeGit{}, addsAll{}, nil, opts)
		for n := 1; n <= 3; n++ {
			s.Enqueue(pr(n, "sha"))
		}
		if diff := cmp.Diff([]string{"#1: preview dropped: over 2 pull requests waiting"}, dropped); diff != "" {
			t.Errorf("(-want +got)\n%s", diff)
		}
	})
}

func TestClosedPullRequestIsRemoved(t *testing.T) {
	git := &fakeGit{heads: map[string]string{"refs/pull/4/head": "ccc"}}
	pub := &recorder{}
	s, done := start(t, DefaultOptions(), git, pub)
	s.Enqueue(pr(4, "ccc"))
	next(t, done)
	closed := pr(4, "")
	closed.Closed = true
	s.Enqueue(closed)
	if _, ok := s.Get("shop/web", 4); ok {
		t.Error("the closed pull request's preview is still served")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pub.mu.Lock()
		got := strings.Join(pub.removals, ",")
		pub.mu.Unlock()
		if got == "shop/web#4" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("removals %q", got)
		}
		time.Sleep(10 * time.Millisecond) // polling the recorder, with a deadline
	}
}

func TestUploadedFilesKeepTheLimits(t *testing.T) {
	lim := source.Limits{MaxFileBytes: 10, MaxTotalBytes: 100, MaxFiles: 2}
	files := Uploaded{"deploy/manifests/a.yaml": []byte("a"), "deploy/manifests/b.yaml": []byte("b"), "deploy/manifests/big": []byte("01234567890"), "src/main.go": []byte("x")}
	got, err := files.Files(entry, "", "deploy/manifests", lim)
	if err != nil || len(got) != 2 {
		t.Errorf("at the limit: %v, %v", got, err)
	}
	files["deploy/manifests/c.yaml"] = []byte("c")
	var over *source.LimitError
	if _, err := files.Files(entry, "", "deploy/manifests", lim); !errors.As(err, &over) {
		t.Errorf("one file over the limit: %v", err)
	}
}

// hangsOn never answers for one commit, until its context ends.
type hangsOn struct{ commit string }

func (h hangsOn) DryRun(ctx context.Context, req apply.Request) (apply.DryRunResult, error) {
	if req.Commit == h.commit {
		<-ctx.Done()
		return apply.DryRunResult{}, ctx.Err()
	}
	return addsAll{}.DryRun(ctx, req)
}

func TestAPreviewTimesOutAndTheNextRuns(t *testing.T) {
	git := &fakeGit{heads: map[string]string{"refs/pull/1/head": "slow", "refs/pull/2/head": "fast"}}
	opts := DefaultOptions()
	opts.Timeout = 100 * time.Millisecond
	done := make(chan Result, 2)
	opts.Done = func(repo string, number int, res Result) { done <- res }
	s := New(git, hangsOn{"slow"}, nil, opts)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	s.Enqueue(pr(1, "slow"))
	s.Enqueue(pr(2, "fast"))
	var got []string
	for range 2 {
		select {
		case res := <-done:
			got = append(got, res.Commit+" "+res.State+" "+res.Error)
		case <-time.After(10 * time.Second):
			t.Fatalf("previews ended: %v", got)
		}
	}
	want := []string{"slow failed the preview took over 100ms and was stopped: context deadline exceeded", "fast done "}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}

// blocksOn answers for one commit only once its context ends, telling when it started.
type blocksOn struct {
	commit  string
	started chan struct{}
}

func (b blocksOn) DryRun(ctx context.Context, req apply.Request) (apply.DryRunResult, error) {
	if req.Commit == b.commit {
		close(b.started)
		<-ctx.Done()
		return apply.DryRunResult{}, context.Cause(ctx)
	}
	return addsAll{}.DryRun(ctx, req)
}

func TestANewerEventStopsTheRunningPreview(t *testing.T) {
	git := &fakeGit{heads: map[string]string{"refs/pull/1/head": "old"}}
	opts := DefaultOptions() // 2 minutes: the old preview ends only if it is stopped
	done := make(chan Result, 2)
	opts.Done = func(repo string, number int, res Result) { done <- res }
	dry := blocksOn{"old", make(chan struct{})}
	s := New(git, dry, nil, opts)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	s.Enqueue(pr(1, "old"))
	select {
	case <-dry.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the first preview did not start")
	}
	git.mu.Lock()
	git.heads["refs/pull/1/head"] = "new"
	git.mu.Unlock()
	s.Enqueue(pr(1, "new"))
	select {
	case res := <-done:
		if res.Commit != "new" || res.State != StateDone {
			t.Errorf("first preview stored: %+v", res)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the newer event's preview did not end: the running one was not stopped")
	}
}

// TestHostileTreesFailThePreview previews uploaded trees one step over deployd's limits:
// each fails the preview, saying which limit and where, and nothing is dry-run.
func TestHostileTreesFailThePreview(t *testing.T) {
	lim := DefaultLimits()
	lim.Files.MaxFiles, lim.MaxObjects = 3, 2
	laughs := "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n" +
		"d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
	cm := func(name string) []byte {
		return []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\n")
	}
	tests := []struct {
		name  string
		files Uploaded
		want  string
	}{
		{"a file over the count", Uploaded{"deploy/manifests/a.yaml": cm("a"), "deploy/manifests/b.yaml": cm("b"), "deploy/manifests/c.yaml": cm("c"), "deploy/manifests/d.yaml": cm("d")},
			"deploy/manifests has 4 files, more than the limit of 3"},
		{"an object over the count", Uploaded{"deploy/manifests/a.yaml": cm("a"), "deploy/manifests/b.yaml": cm("b"), "deploy/manifests/c.yaml": cm("c")},
			"renders to more than the limit of 2 objects per repo"},
		{"a billion laughs", Uploaded{"deploy/manifests/lol.yaml": []byte(laughs)}, "deploy/manifests/lol.yaml:1: YAML aliases expand to more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dry := &countingDryRun{}
			res := run(context.Background(), tt.files, dry, entry, "", "", lim)
			if res.State != StateFailed || !strings.Contains(res.Error, tt.want) || dry.calls != 0 {
				t.Errorf("%s, %q (%d dry runs), want failed with %q", res.State, res.Error, dry.calls, tt.want)
			}
		})
	}
}

type countingDryRun struct{ calls int }

func (c *countingDryRun) DryRun(ctx context.Context, req apply.Request) (apply.DryRunResult, error) {
	c.calls++
	return addsAll{}.DryRun(ctx, req)
}
