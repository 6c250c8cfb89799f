package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/rollout"
)

var since = time.Now().Add(-time.Minute)

// changingStatuses is memStatuses whose message and version a test can change.
type changingStatuses struct {
	mu      sync.Mutex
	message string
	version uint64
}

func (c *changingStatuses) Get(r apply.Ref) rollout.Tracked {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := memStatuses{}.Get(r)
	t.Message, t.Changed = c.message, since
	return t
}

func (c *changingStatuses) Changed() <-chan struct{} { return nil }

func (c *changingStatuses) Version() uint64 { c.mu.Lock(); defer c.mu.Unlock(); return c.version }

func (c *changingStatuses) set(msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.message, c.version = msg, c.version+1
}

func serve(h http.Handler, target string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec
}

func TestStatusCache(t *testing.T) {
	s := loaded(t, 3, 2)
	statuses := &changingStatuses{message: "first"}
	s.deps.Statuses = statuses
	cached, huma := s.Handler(), s.mux

	for _, target := range []string{"/deployment/team1/app1", "/deployment/TEAM1/App1?environment=prod"} {
		t.Run("answers as huma does, byte for byte: "+target, func(t *testing.T) {
			for range 2 { // a miss, then a hit
				got, want := serve(cached, target), serve(huma, target)
				if got.Code != 200 || got.Body.String() != want.Body.String() || got.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
					t.Fatalf("cached %d %q %s\nhuma %d %q %s", got.Code, got.Header().Get("Content-Type"), got.Body, want.Code, want.Header().Get("Content-Type"), want.Body)
				}
			}
		})
	}

	t.Run("a new record is served at once", func(t *testing.T) {
		serve(cached, "/deployment/team1/app1")
		key := config.Key{Name: "team1/app1", Environment: "prod"}
		s.deps.View.Record(key, history.Record{Number: 8, Phase: history.Applying, Started: time.Now(), Commit: history.Commit{SHA: strings.Repeat("b", 40)}})
		if body := serve(cached, "/deployment/team1/app1").Body.String(); !strings.Contains(body, `"number":8`) {
			t.Errorf("after a new record: %s", body)
		}
	})

	t.Run("a status change is served at once", func(t *testing.T) {
		serve(cached, "/deployment/team1/app1")
		statuses.set("second")
		if body := serve(cached, "/deployment/team1/app1").Body.String(); !strings.Contains(body, `"message":"second"`) {
			t.Errorf("after a status change: %s", body)
		}
	})

	for _, tc := range []struct{ name, target string }{
		{"an unknown repo", "/deployment/team1/nope"},
		{"an unknown environment", "/deployment/team1/app1?environment=staging"},
		{"a too long owner", "/deployment/" + strings.Repeat("o", 40) + "/app1"},
		{"an unknown query parameter", "/deployment/team1/app1?pretty=1"},
	} {
		t.Run("leaves "+tc.name+" to huma", func(t *testing.T) {
			got, want := serve(cached, tc.target), serve(huma, tc.target)
			if got.Code != want.Code || got.Body.String() != want.Body.String() {
				t.Errorf("cached %d %s, huma %d %s", got.Code, got.Body, want.Code, want.Body)
			}
		})
	}
}

// BenchmarkGetDeploymentUncached is the status handler building every answer (huma's route).
func BenchmarkGetDeploymentUncached(b *testing.B) {
	h := loaded(b, 1000, 10).mux
	req := httptest.NewRequest(http.MethodGet, "/deployment/team7/app507", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}

// TestStatusCacheLaterSecond: the answer of a later second, put together from the cached
// parts, is the answer encoded anew at that second, byte for byte: only the ages moved.
func TestStatusCacheLaterSecond(t *testing.T) {
	s := loaded(t, 3, 4)
	s.deps.Statuses = &changingStatuses{message: "first"}
	es, err := s.entries("team1", "app1", "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c, err := s.build(es, now, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.ages) == 0 || c.parts == nil {
		t.Fatalf("no ages cut out of %s", c.body)
	}
	for _, later := range []time.Duration{0, time.Second, 5 * time.Second, 3 * time.Hour} {
		want, err := encode(s.status(es, now.Add(later)))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.at(now.Add(later).Unix()); string(got.body) != string(want) {
			t.Errorf("%s later:\ngot  %s\nwant %s", later, got.body, want)
		}
	}
}
