package webhook

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// counted counts the bytes the handler reads of a request body.
type counted struct {
	io.Reader
	n *atomic.Int64
}

func (c counted) Read(p []byte) (int, error) {
	n, err := c.Reader.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c counted) Close() error { return nil }

// zeros is an endless body that allocates nothing.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestUnauthenticatedBodiesAreNotRead(t *testing.T) {
	const size = 25 << 20 // what GitHub allows, and what deployd read before
	h, q := newHandler(t, twoRepos)
	tests := []struct {
		name      string
		signature string
		length    int64
		want      int
	}{
		{"no signature", "", size, http.StatusUnauthorized},
		{"a SHA-1 signature", "sha1=" + strings.Repeat("ab", 20), size, http.StatusUnauthorized},
		{"a signature of the wrong length", "sha256=abcd", size, http.StatusUnauthorized},
		{"a signature that is not hex", "sha256=" + strings.Repeat("xy", 32), size, http.StatusUnauthorized},
		{"a well-formed signature with a body over the limit", "sha256=" + strings.Repeat("ab", 32), size, http.StatusRequestEntityTooLarge},
		{"one byte over the limit, announced", "sha256=" + strings.Repeat("ab", 32), DefaultOptions().MaxBody + 1, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const clients = 32
			var read atomic.Int64
			codes := make([]int, clients)
			var wg sync.WaitGroup
			for i := range clients {
				wg.Go(func() {
					req := httptest.NewRequest(http.MethodPost, "/webhooks/github", nil)
					req.Body, req.ContentLength = counted{io.LimitReader(zeros{}, tt.length), &read}, tt.length
					req.Header.Set("X-GitHub-Event", "push")
					if tt.signature != "" {
						req.Header.Set("X-Hub-Signature-256", tt.signature)
					}
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					codes[i] = rec.Code
				})
			}
			wg.Wait()
			for i, c := range codes {
				if c != tt.want {
					t.Errorf("client %d answered %d, want %d", i, c, tt.want)
				}
			}
			if n := read.Load(); n != 0 {
				t.Errorf("%d clients sending %d MiB each: %d bytes read, want none", clients, tt.length>>20, n)
			}
			if len(q.queued) != 0 {
				t.Errorf("queued %v", q.queued)
			}
		})
	}
}

func TestBodyLimit(t *testing.T) {
	limit := DefaultOptions().MaxBody
	ping := func(size int64) []byte {
		return append([]byte(`{"zen":"Keep it logically awesome."}`), strings.Repeat(" ", int(size)-36)...)
	}
	h, _ := newHandler(t, twoRepos)
	for _, tt := range []struct {
		name string
		body []byte
		want int
	}{
		{"a payload of the limit is read", ping(limit), http.StatusOK},
		{"one byte more, sent without a length, is cut at the limit", ping(limit + 1), http.StatusRequestEntityTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var read atomic.Int64
			req := httptest.NewRequest(http.MethodPost, "/webhooks/github", nil)
			req.Body, req.ContentLength = counted{strings.NewReader(string(tt.body)), &read}, -1 // chunked
			req.Header.Set("X-GitHub-Event", "ping")
			req.Header.Set("X-Hub-Signature-256", sign(tt.body, secret))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want || read.Load() > limit+1 {
				t.Errorf("answered %d after reading %d bytes, want %d and at most %d bytes", rec.Code, read.Load(), tt.want, limit+1)
			}
		})
	}
}

func TestConcurrentReadsAreBounded(t *testing.T) {
	opts := DefaultOptions()
	opts.MaxReads, opts.ReadWait, opts.MaxReadsPerClient = 2, 50*time.Millisecond, 10 // one client address here
	h, q := newHandler(t, twoRepos)
	h = New(q, h.secret.path, opts, nil)

	// Two clients trickle their bodies and hold both reads.
	type slow struct {
		w    *io.PipeWriter
		code chan int
	}
	var slows []slow
	for range opts.MaxReads {
		r, w := io.Pipe()
		s := slow{w, make(chan int, 1)}
		slows = append(slows, s)
		req := httptest.NewRequest(http.MethodPost, "/webhooks/github", r)
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-Hub-Signature-256", "sha256="+strings.Repeat("ab", 32))
		go func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			s.code <- rec.Code
		}()
		if _, err := w.Write([]byte("{")); err != nil { // returns once the handler read it
			t.Fatal(err)
		}
	}
	push, _ := os.ReadFile("testdata/push.json")
	rec, out := deliver(h, "push", "application/json", push, sign(push, secret))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || len(q.queued) != 0 {
		t.Errorf("a third delivery while two are read: %d %v (Retry-After %q), queued %v; want 503 with Retry-After", rec.Code, out, rec.Header().Get("Retry-After"), q.queued)
	}
	for _, s := range slows {
		s.w.CloseWithError(errors.New("client gave up"))
		if c := <-s.code; c != http.StatusBadRequest {
			t.Errorf("a body cut short answered %d, want 400", c)
		}
	}
	if rec, out := deliver(h, "push", "application/json", push, sign(push, secret)); rec.Code != http.StatusAccepted {
		t.Errorf("once the reads are done: %d %v, want 202", rec.Code, out)
	}
}

func TestReadsPerClientAreBounded(t *testing.T) {
	opts := DefaultOptions()
	opts.MaxReadsPerClient, opts.ReadWait = 1, 50*time.Millisecond
	h, q := newHandler(t, twoRepos)
	h = New(q, h.secret.path, opts, nil)
	r, w := io.Pipe()
	slow := httptest.NewRequest(http.MethodPost, "/webhooks/github", r)
	slow.RemoteAddr = "198.51.100.7:4000"
	slow.Header.Set("X-GitHub-Event", "push")
	slow.Header.Set("X-Hub-Signature-256", "sha256="+strings.Repeat("ab", 32))
	done := make(chan int, 1)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, slow)
		done <- rec.Code
	}()
	if _, err := w.Write([]byte("{")); err != nil {
		t.Fatal(err)
	}
	push, _ := os.ReadFile("testdata/push.json")
	send := func(addr string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/webhooks/github", strings.NewReader(string(push)))
		req.RemoteAddr = addr
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-Hub-Signature-256", sign(push, secret))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := send("198.51.100.7:4001"); rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("a second delivery from the trickling client: %d %s, want 503 with Retry-After after the wait", rec.Code, rec.Body)
	}
	if rec := send("198.51.100.8:4000"); rec.Code != http.StatusAccepted {
		t.Errorf("another client meanwhile: %d %s, want 202", rec.Code, rec.Body)
	}
	w.CloseWithError(errors.New("gave up"))
	<-done
	if rec := send("198.51.100.7:4002"); rec.Code != http.StatusAccepted {
		t.Errorf("the client once its read ended: %d %s", rec.Code, rec.Body)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.clients) != 0 {
		t.Errorf("%d clients remembered after their reads", len(h.clients))
	}
}

func TestTricklingBodyIsCutOff(t *testing.T) {
	opts := DefaultOptions()
	opts.ReadTimeout = 200 * time.Millisecond
	h, q := newHandler(t, twoRepos)
	h = New(q, h.secret.path, opts, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /webhooks/github HTTP/1.1\r\nHost: deployd\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: sha256=%s\r\nContent-Length: 1000\r\n\r\n{\"ref\":", strings.Repeat("ab", 32))
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while the body trickles: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a body that stops coming: %d, want 400", resp.StatusCode)
	}
	if len(h.reads) != 0 {
		t.Errorf("%d reads still held", len(h.reads))
	}
}

func TestReplays(t *testing.T) {
	push, _ := os.ReadFile("testdata/push.json")
	deployment := func(id int, created time.Time) []byte {
		return []byte(fmt.Sprintf(`{"deployment":{"id":%d,"sha":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c","ref":"main","environment":"prod","created_at":%q},"repository":{"full_name":"haraldsk/an-application"}}`,
			id, created.Format(time.RFC3339)))
	}
	t.Run("the same delivery twice is queued once", func(t *testing.T) {
		h, q := newHandler(t, twoRepos)
		for i, want := range []int{http.StatusAccepted, http.StatusOK, http.StatusOK} {
			rec, out := deliverAs(h, "d-1", "push", "application/json", push, sign(push, secret))
			if rec.Code != want {
				t.Errorf("delivery %d: %d %v, want %d", i+1, rec.Code, out, want)
			}
			if i > 0 && out["message"] != "duplicate delivery d-1; ignored" {
				t.Errorf("delivery %d: %v", i+1, out["message"])
			}
		}
		if len(q.queued) != 2 { // the two entries deploying main, once each
			t.Errorf("queued %v, want each of two entries once", q.queued)
		}
	})
	t.Run("a GitHub deployment sent again under another delivery id is queued once", func(t *testing.T) {
		h, q := newHandler(t, twoRepos)
		b := deployment(4242, time.Now())
		for i, want := range []int{http.StatusAccepted, http.StatusOK, http.StatusOK} {
			if rec, out := deliver(h, "deployment", "application/json", b, sign(b, secret)); rec.Code != want {
				t.Errorf("delivery %d: %d %v, want %d", i+1, rec.Code, out, want)
			}
		}
		if len(q.reqs) != 1 {
			t.Errorf("queued %d requests, want 1", len(q.reqs))
		}
	})
	t.Run("a GitHub deployment older than the memory of ids is refused as stale", func(t *testing.T) {
		h, q := newHandler(t, twoRepos)
		b := deployment(7, time.Now().Add(-DefaultOptions().RememberFor-time.Minute))
		rec, out := deliver(h, "deployment", "application/json", b, sign(b, secret))
		if rec.Code != http.StatusOK || !strings.Contains(out["message"].(string), "stale") || len(q.reqs) != 0 {
			t.Errorf("%d %v, queued %v; want 200, stale, nothing", rec.Code, out, q.reqs)
		}
	})
	t.Run("a delivery that could not be queued is taken when GitHub sends it again", func(t *testing.T) {
		h, q := newHandler(t, twoRepos)
		q.fail = errors.New("handing the request to the leader: writing ConfigMap/deployd/x: the server is unavailable")
		b := deployment(99, time.Now())
		rec, out := deliverAs(h, "d-2", "deployment", "application/json", b, sign(b, secret))
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(out["message"].(string), "the server is unavailable") {
			t.Errorf("while the queue fails: %d %v, want 503 with the reason", rec.Code, out)
		}
		q.reset()
		if rec, out := deliverAs(h, "d-2", "deployment", "application/json", b, sign(b, secret)); rec.Code != http.StatusAccepted || len(q.reqs) != 1 {
			t.Errorf("sent again: %d %v, queued %v; want 202 and queued", rec.Code, out, q.reqs)
		}
	})
}

func TestLongHeadersAreRefused(t *testing.T) {
	h, q := newHandler(t, twoRepos)
	push, _ := os.ReadFile("testdata/push.json")
	var got []Result
	h.observe = func(r Result) { got = append(got, r) }
	long := strings.Repeat("d", maxHeader+1)
	for _, tt := range []struct{ name, event, delivery string }{
		{"a delivery id one byte over", "push", long},
		{"an event name one byte over", long, "d-1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got = nil
			rec, out := deliverAs(h, tt.delivery, tt.event, "application/json", push, sign(push, secret))
			if rec.Code != http.StatusBadRequest || len(q.queued) != 0 {
				t.Errorf("%d %v, queued %v; want 400", rec.Code, out, q.queued)
			}
			if len(got) != 1 || len(got[0].Delivery) > maxHeader || len(got[0].Event) > maxHeader {
				t.Errorf("observed %+v, want the headers cut to %d bytes", got, maxHeader)
			}
		})
	}
	if n := h.seen.len(); n != 0 {
		t.Errorf("%d delivery ids remembered, want none", n)
	}
}

func TestQueueFailureIsNotAccepted(t *testing.T) {
	h, q := newHandler(t, twoRepos)
	q.fail = errors.New("handing the request to the leader: writing ConfigMap/deployd/x: forbidden")
	push, _ := os.ReadFile("testdata/push.json")
	rec, out := deliver(h, "push", "application/json", push, sign(push, secret))
	if rec.Code != http.StatusServiceUnavailable || out["message"] != "push to main not queued, send it again: "+q.fail.Error() {
		t.Errorf("%d %v, want 503 with the reason", rec.Code, out)
	}
}

func TestRecentIsBounded(t *testing.T) {
	r := newRecent(3, time.Hour)
	now := time.Now()
	for i := range 10 {
		if !r.claim(fmt.Sprint(i), now) {
			t.Errorf("%d claimed before", i)
		}
	}
	if r.len() != 3 || r.claim("9", now) || !r.claim("0", now) {
		t.Errorf("remembers %d keys, want the newest 3", r.len())
	}
	if !r.claim("9", now.Add(time.Hour)) {
		t.Error("a key is remembered past its time")
	}
}

var _ Queue = (*fakeQueue)(nil)
