package api

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
)

// recordingListener keeps the server's side of each accepted TCP connection, and
// counts the socket options set on them.
type recordingListener struct {
	net.Listener
	mu       sync.Mutex
	conns    []*net.TCPConn
	controls int
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, err
	}
	l.mu.Lock()
	l.conns = append(l.conns, tc)
	l.mu.Unlock()
	return &countingConn{TCPConn: tc, l: l}, err
}

func (l *recordingListener) controlled() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.controls
}

type countingConn struct {
	*net.TCPConn
	l *recordingListener
}

func (c *countingConn) SyscallConn() (syscall.RawConn, error) {
	raw, err := c.TCPConn.SyscallConn()
	return countingRaw{raw, c.l}, err
}

type countingRaw struct {
	syscall.RawConn
	l *recordingListener
}

func (r countingRaw) Control(f func(fd uintptr)) error {
	r.l.mu.Lock()
	r.l.controls++
	r.l.mu.Unlock()
	return r.RawConn.Control(f)
}

func corked(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := raw.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return v
}

// TestLargeAnswersAreCorked serves answers above corkAbove over a real TCP connection,
// kept alive between requests: each arrives whole, the same as the uncorked answer, and
// the connection is never left corked (which would hold the next answer up to 200 ms).
func TestLargeAnswersAreCorked(t *testing.T) {
	s := loaded(t, 20, 10)
	want := httptest.NewRecorder()
	s.Handler().ServeHTTP(want, httptest.NewRequest(http.MethodGet, "/deployment/team7/app7", nil))
	if want.Body.Len() <= corkAbove {
		t.Fatalf("the answer is %d bytes, not above %d: the test needs a bigger one", want.Body.Len(), corkAbove)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := &recordingListener{Listener: l}
	srv := &http.Server{Handler: s.Handler(), ConnContext: ConnContext}
	go func() { _ = srv.Serve(rl) }()
	t.Cleanup(func() { _ = srv.Close() })

	controlsBefore := 0
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, DisableCompression: true}}
	for i, path := range []string{"/deployment/team7/app7", "/deployment/team7/app7", "/deployment/team8/app8", "/deployment/team7/nope"} {
		resp, err := client.Get("http://" + l.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case path == "/deployment/team7/nope":
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("request %d: %d, want 404", i, resp.StatusCode)
			}
		case resp.StatusCode != http.StatusOK || len(body) <= corkAbove:
			t.Errorf("request %d: %d, %d bytes", i, resp.StatusCode, len(body))
		case path == "/deployment/team7/app7" && string(body) != want.Body.String():
			t.Errorf("request %d: the corked answer differs from the plain one:\n%s\nwant\n%s", i, body, want.Body)
		}
		controls := rl.controlled() - controlsBefore
		controlsBefore += controls
		if wantControls := 2; path == "/deployment/team7/nope" && controls != 0 || path != "/deployment/team7/nope" && controls != wantControls {
			t.Errorf("request %d (%s): %d socket options set, want TCP_CORK on and off for a large answer, none for a 404", i, path, controls)
		}
		rl.mu.Lock()
		conns := append([]*net.TCPConn(nil), rl.conns...)
		rl.mu.Unlock()
		if len(conns) != 1 {
			t.Fatalf("request %d: %d connections, want the one kept alive", i, len(conns))
		}
		if c := corked(t, conns[0]); c != 0 {
			t.Errorf("request %d: the connection is left corked (TCP_CORK %d)", i, c)
		}
	}
}
