package api

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
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
	c, err := s.build(es, now, now.Unix(), nil, 0)
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

func TestStatusCacheGzip(t *testing.T) {
	s := loaded(t, 3, 10)
	h := s.Handler()
	get := func(target, accept string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, target, nil)
		if accept != "" {
			req.Header.Set("Accept-Encoding", accept)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	plain := get("/deployment/team1/app1", "")
	if plain.Code != 200 || plain.Header().Get("Content-Encoding") != "" || plain.Header().Get("Vary") != "Accept-Encoding" {
		t.Fatalf("without Accept-Encoding: %d, headers %v", plain.Code, plain.Header())
	}
	if len(plain.Body.Bytes()) < minGzip {
		t.Fatalf("the answer is %d bytes, too small to test compression", plain.Body.Len())
	}
	for _, accept := range []string{"gzip", "br, GZIP;q=0.5", "deflate, *", "gzip, deflate, br"} {
		got := get("/deployment/team1/app1", accept)
		if got.Code != 200 || got.Header().Get("Content-Encoding") != "gzip" || got.Header().Get("Vary") != "Accept-Encoding" {
			t.Fatalf("Accept-Encoding %q: %d, headers %v", accept, got.Code, got.Header())
		}
		if got.Header().Get("Content-Length") != strconv.Itoa(got.Body.Len()) || got.Body.Len() >= plain.Body.Len()/2 {
			t.Errorf("Accept-Encoding %q: Content-Length %s, %d bytes gzipped against %d plain", accept, got.Header().Get("Content-Length"), got.Body.Len(), plain.Body.Len())
		}
		zr, err := gzip.NewReader(got.Body)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		// The same second's answer, byte for byte (ages move with the clock).
		if again := get("/deployment/team1/app1", ""); string(body) != again.Body.String() && string(body) != plain.Body.String() {
			t.Errorf("Accept-Encoding %q: decompressed\n%s\nplain\n%s", accept, body, again.Body)
		}
	}
	for _, accept := range []string{"gzip;q=0", "identity", "br", "gzip;q=bad", "x-gzip2"} {
		if got := get("/deployment/team1/app1", accept); got.Header().Get("Content-Encoding") != "" {
			t.Errorf("Accept-Encoding %q: answered with Content-Encoding %q", accept, got.Header().Get("Content-Encoding"))
		}
	}

	t.Run("clients asking at once for an answer not yet compressed each get it whole", func(t *testing.T) {
		var wg sync.WaitGroup
		bodies := make([]string, 16)
		for i := range bodies {
			wg.Go(func() { bodies[i] = get("/deployment/team2/app2", "gzip").Body.String() })
		}
		wg.Wait()
		for _, b := range bodies {
			zr, err := gzip.NewReader(strings.NewReader(b))
			if err != nil {
				t.Fatalf("a concurrent answer is not gzip: %v", err)
			}
			if _, err := io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestAcceptsGzip(t *testing.T) {
	for header, want := range map[string]bool{
		"": false, "gzip": true, "GZip": true, " gzip ; q=1": true, "gzip;q=0": false, "gzip;q=0.0": false,
		"gzip;q=0.001": true, "br;q=1, gzip;q=0": false, "*": true, "*;q=0": false, "identity": false,
		"deflate,gzip": true, "x-gzip": false, "gzipx": false, "gzip;q=nope": false, ",,,": false,
	} {
		if got := acceptsGzip(header); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", header, got, want)
		}
	}
}

func BenchmarkGetDeploymentGzip(b *testing.B) {
	h := loaded(b, 1000, 10).Handler()
	req := httptest.NewRequest(http.MethodGet, "/deployment/team7/app507", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req.WithContext(context.Background()))
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Encoding") != "gzip" {
			b.Fatalf("status %d, headers %v", rec.Code, rec.Header())
		}
	}
}

// TestTicksSpreadOverTheSecond: each key's answers go stale once a second, at a phase of
// its own, so that 1,000 answers are not all put together again in the same moment.
func TestTicksSpreadOverTheSecond(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	flipped := 0
	for i := range 1000 {
		key := "team" + strconv.Itoa(i) + "/app\x00"
		t0 := tick(key, now)
		if got := tick(key, now.Add(time.Second)); got != t0+1 {
			t.Fatalf("%q: tick %d a second after %d", key, got, t0)
		}
		if got := tick(key, now.Add(3*time.Hour)); got != t0+3*3600 {
			t.Fatalf("%q: tick %d three hours after %d", key, got, t0)
		}
		if tick(key, now.Add(100*time.Millisecond)) != t0 {
			flipped++
		}
	}
	// A tenth of the keys is expected to move on within a tenth of a second; with the
	// clock's seconds it would be all of them or none.
	if flipped < 30 || flipped > 200 {
		t.Errorf("%d of 1000 keys moved to their next second within 100 ms, want about 100", flipped)
	}
}
