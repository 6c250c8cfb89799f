package tag

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/source"
)

// pusher is a Pusher whose answers a test sets.
type pusher struct {
	mu     sync.Mutex
	push   func(n int, tag source.Tag) error
	pushed []source.Tag
	block  chan struct{} // when set, pushes wait for it to close
}

func (p *pusher) PushTag(ctx context.Context, repo config.Repo, tag source.Tag) error {
	if p.block != nil {
		select {
		case <-p.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pushed = append(p.pushed, tag)
	if p.push == nil {
		return nil
	}
	return p.push(len(p.pushed), tag)
}

// statuses collects the statuses told, by record number.
type statuses struct {
	mu  sync.Mutex
	got map[int][]Status
}

func (s *statuses) changed(repo config.Repo, number int, st Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.got == nil {
		s.got = map[int][]Status{}
	}
	s.got[number] = append(s.got[number], st)
}

func (s *statuses) of(number int) []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Status(nil), s.got[number]...)
}

func testOptions(st *statuses) Options {
	o := DefaultOptions()
	o.BackoffBase, o.BackoffMax, o.MaxAttempts = time.Millisecond, 4*time.Millisecond, 4
	o.Changed, o.Dropped = st.changed, st.changed
	return o
}

var repo = config.Repo{Name: "shop/web", Environment: "production", TagDeployments: true}

func record(number int, phase history.Phase) history.Record {
	start := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	return history.Record{Number: number, Phase: phase, Commit: history.Commit{SHA: strings.Repeat("a", 40)},
		Started: start, Ended: start.Add(5 * time.Second),
		Objects: []history.Object{{Object: "Deployment/shop/web", Action: "configured", Status: "Current"}}}
}

func TestTagger(t *testing.T) {
	refused := errors.New("the server refused it: pre-receive hook declined")
	tests := []struct {
		name   string
		repo   config.Repo
		rec    history.Record
		push   func(n int, tag source.Tag) error
		want   []Status
		pushes int
	}{{
		name: "a succeeded deployment is tagged",
		repo: repo, rec: record(1, history.Succeeded),
		want:   []Status{{Name: "deployment-0001", State: Pending}, {Name: "deployment-0001", State: Pushed, Attempts: 1}},
		pushes: 1,
	}, {
		name: "a refused push is retried until it passes",
		repo: repo, rec: record(2, history.Failed),
		push: func(n int, _ source.Tag) error {
			if n < 3 {
				return refused
			}
			return nil
		},
		want: []Status{{Name: "deployment-0002", State: Pending},
			{Name: "deployment-0002", State: Pending, Error: refused.Error(), Attempts: 1},
			{Name: "deployment-0002", State: Pending, Error: refused.Error(), Attempts: 2},
			{Name: "deployment-0002", State: Pushed, Attempts: 3}},
		pushes: 3,
	}, {
		name: "retries are bounded",
		repo: repo, rec: record(3, history.Error),
		push: func(int, source.Tag) error { return refused },
		want: []Status{{Name: "deployment-0003", State: Pending},
			{Name: "deployment-0003", State: Pending, Error: refused.Error(), Attempts: 1},
			{Name: "deployment-0003", State: Pending, Error: refused.Error(), Attempts: 2},
			{Name: "deployment-0003", State: Pending, Error: refused.Error(), Attempts: 3},
			{Name: "deployment-0003", State: Failed, Error: refused.Error(), Attempts: 4}},
		pushes: 4,
	}, {
		name: "a tag on another commit is not retried",
		repo: repo, rec: record(4, history.Succeeded),
		push: func(int, source.Tag) error {
			return &source.TagConflictError{Name: "deployment-0004", Existing: strings.Repeat("b", 40)}
		},
		want: []Status{{Name: "deployment-0004", State: Pending},
			{Name: "deployment-0004", State: Failed, Attempts: 1,
				Error: "tag deployment-0004 already exists on the remote, on bbbbbbbbbbbb, not on : deployd does not move tags (delete it on the remote to have it pushed again)"}},
		pushes: 1,
	}, {
		name: "a superseded deployment is not tagged",
		repo: repo, rec: record(5, history.Superseded),
	}, {
		name: "a deployment still waiting is not tagged",
		repo: repo, rec: record(6, history.Waiting),
	}, {
		name: "a repo that does not ask for tags is not tagged",
		repo: config.Repo{Name: "shop/web", Environment: "production"}, rec: record(7, history.Succeeded),
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := &statuses{}
			p := &pusher{push: tc.push}
			tg := New(p, testOptions(st))
			tg.Record(tc.repo, tc.rec)
			tg.Wait()
			if diff := cmp.Diff(tc.want, st.of(tc.rec.Number)); diff != "" {
				t.Errorf("statuses (-want +got):\n%s", diff)
			}
			if len(p.pushed) != tc.pushes {
				t.Errorf("%d pushes, want %d", len(p.pushed), tc.pushes)
			}
		})
	}
}

func TestTaggerTagsARecordOnce(t *testing.T) {
	st := &statuses{}
	p := &pusher{}
	tg := New(p, testOptions(st))
	tg.Record(repo, record(1, history.Succeeded))
	tg.Record(repo, record(1, history.Succeeded))
	tg.Wait()
	if len(p.pushed) != 1 {
		t.Errorf("%d pushes of one record, want 1", len(p.pushed))
	}
}

func TestTaggerBoundsPendingTags(t *testing.T) {
	st := &statuses{}
	p := &pusher{block: make(chan struct{})}
	opts := testOptions(st)
	opts.MaxPending = 2
	tg := New(p, opts)
	for n := 1; n <= 3; n++ {
		r := repo
		r.Name = "shop/web" + string(rune('0'+n))
		tg.Record(r, record(n, history.Succeeded))
	}
	got := st.of(3)
	if len(got) != 1 || got[0].State != Failed || !strings.Contains(got[0].Error, "2 tags are already waiting") {
		t.Errorf("the tag over the bound: %+v, want failed at once", got)
	}
	close(p.block)
	tg.Wait()
	if len(p.pushed) != 2 {
		t.Errorf("%d pushes, want 2", len(p.pushed))
	}
}

func TestTaggerStopsWithItsContext(t *testing.T) {
	st := &statuses{}
	p := &pusher{push: func(int, source.Tag) error { return errors.New("down") }}
	opts := testOptions(st)
	opts.BackoffBase, opts.BackoffMax, opts.MaxAttempts = time.Hour, time.Hour, 8
	tg := New(p, opts)
	ctx, cancel := context.WithCancel(context.Background())
	tg.Start(ctx)
	tg.Record(repo, record(1, history.Succeeded))
	deadline := time.Now().Add(10 * time.Second)
	for len(st.of(1)) < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling the status told, with a deadline
	}
	cancel()
	tg.Wait() // returns: the hour's backoff ends with the context
}

func TestNameAndMessage(t *testing.T) {
	rec := record(7, history.Failed)
	rec.Error = "Deployment/shop/web: Progressing: ProgressDeadlineExceeded"
	if got := Name(repo, rec, true); got != "production/deployment-0007" {
		t.Errorf("name in several environments = %q", got)
	}
	if got := Name(repo, rec, false); got != "deployment-0007" {
		t.Errorf("name = %q", got)
	}
	want := `Failed Deployment

Deployment: deployment-0007 of shop/web in production
Link: https://deployd.example/deployment/shop/web/history/7?environment=production
Phase: failed
Started: 2026-11-27T10:00:00Z
Ended: 2026-11-27T10:00:05Z
Error: Deployment/shop/web: Progressing: ProgressDeadlineExceeded
Objects:
  Deployment/shop/web: configured, Current
`
	if diff := cmp.Diff(want, Message(repo, rec, "https://deployd.example/")); diff != "" {
		t.Errorf("message (-want +got):\n%s", diff)
	}
	rec.Phase = history.Succeeded
	if got := Message(repo, rec, ""); !strings.HasPrefix(got, "Successfully Deployed\n\n") || !strings.Contains(got, "Link: /deployment/shop/web/history/7?environment=production\n") {
		t.Errorf("message:\n%s", got)
	}
	t.Run("a deployment of many objects is cut at 100 lines", func(t *testing.T) {
		big := record(8, history.Succeeded)
		big.Objects = make([]history.Object, 1000)
		for i := range big.Objects {
			big.Objects[i] = history.Object{Object: "ConfigMap/shop/c", Action: "created"}
		}
		got := Message(repo, big, "")
		if n := strings.Count(got, "ConfigMap/shop/c"); n != maxObjects || !strings.Contains(got, "… and 900 more") {
			t.Errorf("%d object lines, want %d and the rest counted:\n%s", n, maxObjects, got[len(got)-200:])
		}
	})
}
