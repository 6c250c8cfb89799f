package api

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// writeCounter counts the writes to the server's side of each accepted connection.
type writeCounter struct {
	net.Listener
	mu     sync.Mutex
	conns  int
	writes []int // the size of each write, in order, across connections
}

func (l *writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	l.mu.Lock()
	l.conns++
	l.mu.Unlock()
	return countedConn{c, l}, nil
}

func (l *writeCounter) take() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.writes
	l.writes = nil
	return w
}

type countedConn struct {
	net.Conn
	l *writeCounter
}

func (c countedConn) Write(p []byte) (int, error) {
	c.l.mu.Lock()
	c.l.writes = append(c.l.writes, len(p))
	c.l.mu.Unlock()
	return c.Conn.Write(p)
}

// TestLargeAnswersGoInOneWrite serves answers above wholeAbove over a real TCP
// connection, kept alive between requests: each arrives whole, the same as the answer
// written plainly, in one write to the connection; small answers and errors are written
// as net/http writes them, and the buffer of one answer never leaks into the next. The
// first three go the fast path; the 404 hands the connection to net/http, which writes
// the last through writeWhole.
func TestLargeAnswersGoInOneWrite(t *testing.T) {
	s := loaded(t, 20, 10)
	want := map[string]string{}
	for _, path := range []string{"/deployment/team7/app7", "/deployment/team8/app8"} {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Body.Len() <= wholeAbove {
			t.Fatalf("the answer is %d bytes, not above %d: the test needs a bigger one", rec.Body.Len(), wholeAbove)
		}
		want[path] = rec.Body.String()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wc := &writeCounter{Listener: l}
	srv := &http.Server{Handler: s.Handler(), ConnContext: ConnContext}
	var fast atomic.Int64
	s.opts.Observe = func(time.Duration) { fast.Add(1) }
	go func() { _ = srv.Serve(s.Listener(wc, srv)) }()
	t.Cleanup(func() { _ = srv.Close() })

	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, DisableCompression: true}}
	for i, path := range []string{"/deployment/team7/app7", "/deployment/team7/app7", "/deployment/team8/app8", "/deployment/team7/nope", "/deployment/team7/app7"} {
		resp, err := client.Get("http://" + l.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		writes := wc.take()
		if path == "/deployment/team7/nope" {
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("request %d: %d, want 404", i, resp.StatusCode)
			}
			continue
		}
		if resp.StatusCode != http.StatusOK || string(body) != want[path] {
			t.Errorf("request %d (%s): %d, the answer differs from the one written plainly:\n%s\nwant\n%s", i, path, resp.StatusCode, body, want[path])
		}
		if len(writes) != 1 || writes[0] <= len(body) {
			t.Errorf("request %d (%s): writes of %v bytes to the connection, want one of headers and the %d-byte body", i, path, writes, len(body))
		}
	}
	if n := fast.Load(); n != 3 {
		t.Errorf("the fast path answered %d, want the 3 before the 404", n)
	}
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.conns != 1 {
		t.Errorf("%d connections, want the one kept alive", wc.conns)
	}
}

// TestPlainListenerWritesAsNetHTTP checks the fallback: on a connection Listener did not
// accept, the large answer is written as net/http writes it, whole.
func TestPlainListenerWritesAsNetHTTP(t *testing.T) {
	s := loaded(t, 20, 10)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wc := &writeCounter{Listener: l}
	srv := &http.Server{Handler: s.Handler(), ConnContext: ConnContext}
	go func() { _ = srv.Serve(wc) }()
	t.Cleanup(func() { _ = srv.Close() })
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	resp, err := client.Get("http://" + l.Addr().String() + "/deployment/team7/app7")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(body) <= wholeAbove {
		t.Fatalf("%d, %d bytes", resp.StatusCode, len(body))
	}
	if writes := wc.take(); len(writes) != 2 {
		t.Errorf("writes of %v bytes, want net/http's two (its 4 KB buffer, then the rest)", writes)
	}
}
