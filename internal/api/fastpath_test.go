package api

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fastServer serves s behind Listener with srv's timeouts, and a second server for s
// without it (net/http alone); it returns their addresses and the count of answers the
// fast path wrote.
func fastServer(t *testing.T, s *Server, srv *http.Server) (fast, plain string, answered *atomic.Int64) {
	t.Helper()
	answered = &atomic.Int64{}
	s.opts.Observe = func(time.Duration) { answered.Add(1) }
	srv.Handler, srv.ConnContext = s.Handler(), ConnContext
	fl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(s.Listener(fl, srv)) }()
	t.Cleanup(func() { _ = srv.Close() })
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ref := &http.Server{Handler: s.Handler()}
	go func() { _ = ref.Serve(pl) }()
	t.Cleanup(func() { _ = ref.Close() })
	return fl.Addr().String(), pl.Addr().String(), answered
}

// rawAnswer is one response as it came over the wire: the head without its Date line,
// and the body.
type rawAnswer struct {
	head, date string
	body       []byte
}

// readRaw reads one response with a Content-Length body (all of the status API's are).
func readRaw(t *testing.T, r *bufio.Reader) rawAnswer {
	t.Helper()
	var a rawAnswer
	length := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading an answer's head: %v (read %q)", err, a.head+line)
		}
		if v, ok := strings.CutPrefix(line, "Date: "); ok {
			a.date = strings.TrimSpace(v)
			continue
		}
		if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		a.head += line
		if line == "\r\n" {
			break
		}
	}
	a.body = make([]byte, length)
	if _, err := io.ReadFull(r, a.body); err != nil {
		t.Fatalf("reading a body of %d bytes: %v", length, err)
	}
	return a
}

// exchange sends raw on a new connection to addr and reads answers answers.
func exchange(t *testing.T, addr, raw string, answers int) []rawAnswer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	var out []rawAnswer
	for range answers {
		out = append(out, readRaw(t, r))
	}
	return out
}

func get(path, headers string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: deployd.test\r\n" + headers + "\r\n"
}

// TestFastAnswersAsNetHTTP sends plain status requests, as clients send them, to the fast
// path and to net/http alone: the answers are the same bytes (the Date aside), and the
// fast path wrote them.
func TestFastAnswersAsNetHTTP(t *testing.T) {
	s := loaded(t, 20, 10)
	fast, plain, answered := fastServer(t, s, &http.Server{})
	for _, raw := range []string{
		get("/deployment/team7/app7", ""),
		get("/deployment/team7/app7", "User-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n"),
		get("/deployment/TEAM7/App7?environment=prod", "accept: application/json\r\nX-Request-Id: 12\r\n"),
		get("/deployment/team8/app8?environment=", "Accept: */*\r\nAccept-Encoding: br;q=1, gzip;q=0.5\r\n"),
		get("/deployment/team8/app8", "Accept-Encoding: gzip;q=0\r\nUser-Agent: curl/8.5.0\r\n"),
	} {
		before := answered.Load()
		got := exchange(t, fast, raw, 1)[0]
		want := exchange(t, plain, raw, 1)[0]
		if answered.Load() != before+1 {
			t.Errorf("%q: not answered on the fast path", raw)
		}
		if got.head != want.head || !bytes.Equal(got.body, want.body) {
			t.Errorf("%q: the fast path answered\n%s%s\nnet/http\n%s%s", raw, got.head, got.body, want.head, want.body)
		}
		if d, err := http.ParseTime(got.date); err != nil || time.Since(d) > 5*time.Second {
			t.Errorf("%q: Date %q (%v)", raw, got.date, err)
		}
	}
}

// TestFastHandsOnWhatItDoesNotTake sends requests the fast path must leave to net/http,
// hostile ones among them: each client gets net/http's answer, and the fast path wrote
// none of them.
func TestFastHandsOnWhatItDoesNotTake(t *testing.T) {
	s := loaded(t, 20, 10)
	fast, plain, answered := fastServer(t, s, &http.Server{ReadHeaderTimeout: 5 * time.Second})
	long := strings.Repeat("X-Padding: "+strings.Repeat("p", 100)+"\r\n", 10)
	for _, raw := range []string{
		"GET /deployment/team7/app7 HTTP/1.0\r\nHost: deployd.test\r\n\r\n",
		"GET /deployment/team7/app7 HTTP/1.1\nHost: deployd.test\n\n",
		"GET /deployment/team7/app7 HTTP/1.1\r\n\r\n",                                          // no Host: 400
		"GET http://deployd.test/deployment/team7/app7 HTTP/1.1\r\nHost: deployd.test\r\n\r\n", // absolute form
		get("/deployment/team7/app7", "Host: other.test\r\n"),                                  // two Hosts: 400
		get("/deployment/team7/app7", "Connection: close\r\n"),                                 // net/http closes after it
		get("/deployment/team7/app7", "Content-Length: 3\r\n") + "abc",
		get("/deployment/team7/app7", "Transfer-Encoding: chunked\r\n") + "0\r\n\r\n",
		get("/deployment/team7/app7", "Accept: text/html\r\n"), // huma negotiates
		get("/deployment/team7/app7", "Accept-Encoding: gzip\r\nAccept-Encoding: identity\r\n"),
		get("/deployment/team7/app7", "X-Bad\x01: x\r\n"),
		get("/deployment/team7/app7", "X-Value: caf\xc3\xa9\r\n"),
		get("/deployment/team7/app7", " folded\r\n"),
		get("/deployment/team7/app7", long), // longer than the fast path reads
		get("/deployment/team7/nope", ""),   // 404
		get("/deployment/team7/app7/history", ""),
		get("/deployment/team7/./app7", ""),
		get("/deployment/team7/%61pp7", ""),
		get("/deployment/team7/app7?environment=prod&x=1", ""),
		get("/deployment/team7/app7?environment=pr%6Fd", ""),
		get("/deployment/"+strings.Repeat("o", 40)+"/app7", ""),
		get("/deployment/team7/app7", "Authorization: Bearer a\r\nAuthorization: Bearer b\r\n"),
		"HEAD /deployment/team7/app7 HTTP/1.1\r\nHost: deployd.test\r\n\r\n",
		"POST /deployment/team7/app7/sync HTTP/1.1\r\nHost: deployd.test\r\nContent-Length: 0\r\n\r\n",
	} {
		got := exchange(t, fast, raw, 1)[0]
		want := exchange(t, plain, raw, 1)[0]
		if got.head != want.head || !bytes.Equal(got.body, want.body) {
			t.Errorf("%q: the fast path's server answered\n%s%s\nnet/http\n%s%s", raw, got.head, got.body, want.head, want.body)
		}
	}
	if n := answered.Load(); n != 0 {
		t.Errorf("the fast path answered %d of them", n)
	}
}

// TestFastKeepsOrderWhenHandingOn pipelines requests on one connection: the fast path
// answers those before the first it does not take, net/http that one and the rest, and
// the answers come back in the order asked.
func TestFastKeepsOrderWhenHandingOn(t *testing.T) {
	s := loaded(t, 20, 10)
	fast, _, answered := fastServer(t, s, &http.Server{})
	raw := get("/deployment/team7/app7", "") + get("/deployment/team8/app8", "Accept-Encoding: gzip\r\n") +
		get("/deployment/team7/nope", "") + get("/deployment/team9/app9", "") + get("/deployment/team8/app8", "")
	got := exchange(t, fast, raw, 5)
	status := regexp.MustCompile(`^HTTP/1.1 (\d+)`)
	var codes []string
	for _, a := range got {
		codes = append(codes, status.FindStringSubmatch(a.head)[1])
	}
	if strings.Join(codes, " ") != "200 200 404 200 200" {
		t.Errorf("statuses %v, want 200 200 404 200 200", codes)
	}
	if !bytes.Contains(got[0].body, []byte(`"team7/app7"`)) || !bytes.Contains(got[3].body, []byte(`"team9/app9"`)) ||
		!strings.Contains(got[1].head, "Content-Encoding: gzip") || !bytes.Contains(got[4].body, []byte(`"team8/app8"`)) {
		t.Errorf("answers out of order:\n%s\n%s\n%s", got[0].body[:min(80, len(got[0].body))], got[3].body[:min(80, len(got[3].body))], got[4].body[:min(80, len(got[4].body))])
	}
	if n := answered.Load(); n != 2 {
		t.Errorf("the fast path answered %d, want the 2 before the 404", n)
	}
}

// TestFastTimeouts holds connections open the way a slow or idle client does: the fast
// path closes them at the server's header and idle timeouts, as net/http would.
func TestFastTimeouts(t *testing.T) {
	s := loaded(t, 20, 10)
	fast, _, _ := fastServer(t, s, &http.Server{ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})
	for _, tc := range []struct {
		name string
		send func(c net.Conn)
	}{
		{"nothing sent", func(net.Conn) {}},
		{"a head never finished", func(c net.Conn) { _, _ = io.WriteString(c, "GET /deployment/team7/app7 HTTP/1.1\r\nHost: x\r\n") }},
		{"a head sent a byte at a time", func(c net.Conn) {
			for _, b := range []byte(get("/deployment/team7/app7", "")) {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}},
		{"idle after an answer", func(c net.Conn) {
			_, _ = io.WriteString(c, get("/deployment/team7/app7", ""))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", fast)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			go tc.send(c)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			rest, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("the connection was not closed: %v", err)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("closed after %v, want about 300 ms", took)
			}
			if tc.name == "idle after an answer" && !bytes.HasPrefix(rest, []byte("HTTP/1.1 200 OK")) {
				t.Errorf("no answer before the close: %q", rest[:min(40, len(rest))])
			}
		})
	}
}

// TestFastConnectionsEndWithTheServer closes the server: a connection the fast path is
// keeping alive ends, and the listener accepts no more.
func TestFastConnectionsEndWithTheServer(t *testing.T) {
	s := loaded(t, 20, 10)
	srv := &http.Server{}
	fast, _, _ := fastServer(t, s, srv)
	c, err := net.Dial("tcp", fast)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	_, _ = io.WriteString(c, get("/deployment/team7/app7", ""))
	readRaw(t, r)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadByte(); err != io.EOF {
		t.Errorf("read after the server closed: %v, want EOF", err)
	}
	if c2, err := net.DialTimeout("tcp", fast, time.Second); err == nil {
		c2.Close()
		t.Errorf("the listener still accepts")
	}
}

// TestFastManyConnections keeps 50 connections alive through the fast path at once,
// each asking in turn, as a load generator does.
func TestFastManyConnections(t *testing.T) {
	s := loaded(t, 50, 3)
	fast, _, answered := fastServer(t, s, &http.Server{})
	errs := make(chan error, 50)
	for i := range 50 {
		go func() {
			c, err := net.Dial("tcp", fast)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			for range 20 {
				path := fmt.Sprintf("/deployment/team%d/app%d", i, i)
				_, _ = io.WriteString(c, get(path, ""))
				resp, err := http.ReadResponse(r, nil)
				if err != nil {
					errs <- err
					return
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"team`+strconv.Itoa(i)+`/app`)) {
					errs <- fmt.Errorf("%s: %d %.60s", path, resp.StatusCode, body)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 50 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := answered.Load(); n != 1000 {
		t.Errorf("the fast path answered %d of 1000", n)
	}
}

// TestFastAnswersNeverRead pipelines requests and never reads an answer, as a hostile
// client may: the fast path's write blocks, and the write timeout ends the connection
// instead of holding its goroutine and buffer for good.
func TestFastAnswersNeverRead(t *testing.T) {
	s := loaded(t, 20, 10)
	fast, _, answered := fastServer(t, s, &http.Server{WriteTimeout: 300 * time.Millisecond, IdleTimeout: time.Minute})
	c, err := net.Dial("tcp", fast)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	req := []byte(strings.Repeat(get("/deployment/team7/app7", ""), 100))
	for time.Since(start) < 10*time.Second {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(req); err != nil {
			break
		}
	}
	// The server stopped reading: either it closed the connection (the write failed at
	// once, or will after the close) or its answers filled the socket's buffers.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the connection was still open 10 s after the last write (%d bytes of answers read)", n)
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("closed after %v", took)
	}
	if answered.Load() == 0 {
		t.Errorf("no answer written: the test did not reach a blocked write")
	}
}
