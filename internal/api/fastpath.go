package api

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// The fast path: plain status requests answered on the connection itself.
//
// Pipelines poll GET /deployment/{owner}/{repo}, and its answer is cached; what was left
// of a request's cost was net/http's own (its request, header maps, context and
// background read: 1.9 KB of garbage and most of deployd's CPU outside the kernel), and
// on one core that garbage's collection set the tail latency. Listener serves a new
// connection's plain status requests from the cache, and hands the connection to
// net/http at the first request it does not take, with that request's bytes: net/http
// serves the rest of the connection as if it had just accepted it, and a connection is
// never taken back. What the fast path takes is narrow (parseFast); anything else,
// errors and 404s included, is net/http's and huma's, which answer it as before.

// Listener wraps l, which srv serves, with the status API's fast path. Serve srv on it,
// with ConnContext as its ConnContext; srv's timeouts bound the fast path's reads and
// writes as they bound net/http's.
func (s *Server) Listener(l net.Listener, srv *http.Server) net.Listener {
	fl := &fastListener{Listener: l, s: s, handed: make(chan net.Conn), failed: make(chan error),
		done: make(chan struct{}), conns: map[*conn]struct{}{}}
	fl.readHeader, fl.idle, fl.write = srv.ReadHeaderTimeout, srv.IdleTimeout, srv.WriteTimeout
	if fl.readHeader <= 0 {
		fl.readHeader = srv.ReadTimeout
	}
	if fl.idle <= 0 {
		fl.idle = srv.ReadTimeout
	}
	return fl
}

// fastListener accepts connections and serves each on the fast path in a goroutine of
// its own; Accept returns those handed on to net/http.
type fastListener struct {
	net.Listener
	s                       *Server
	readHeader, idle, write time.Duration

	start  sync.Once
	handed chan net.Conn // connections handed on to net/http
	failed chan error    // the accept loop's errors
	done   chan struct{} // closed by Close
	stop   sync.Once

	mu    sync.Mutex
	conns map[*conn]struct{} // being served on the fast path
}

func (l *fastListener) Accept() (net.Conn, error) {
	l.start.Do(func() { go l.accept() })
	select {
	case c := <-l.handed:
		return c, nil
	case err := <-l.failed:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// accept accepts connections until the listener is closed. Other errors go to Accept,
// whose caller (http.Server.Serve) decides: it retries temporary ones after a pause,
// which this loop takes too.
func (l *fastListener) accept() {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			select {
			case l.failed <- err:
			case <-l.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		go l.serve(&conn{Conn: nc})
	}
}

// Close stops accepting and ends the connections on the fast path: one waiting for a
// request ends at once, one writing an answer when it has written it.
func (l *fastListener) Close() error {
	err := l.Listener.Close()
	l.stop.Do(func() {
		close(l.done)
		l.mu.Lock()
		for c := range l.conns {
			_ = c.SetReadDeadline(time.Unix(1, 0))
		}
		l.mu.Unlock()
	})
	return err
}

// serve serves c on the fast path, then hands it on or closes it.
func (l *fastListener) serve(c *conn) {
	l.mu.Lock()
	select {
	case <-l.done:
		l.mu.Unlock()
		_ = c.Close()
		return
	default:
	}
	l.conns[c] = struct{}{}
	l.mu.Unlock()
	handOn := l.serveFast(c)
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	if !handOn {
		_ = c.Close()
		return
	}
	select {
	case l.handed <- c:
	case <-l.done:
		_ = c.Close()
	}
}

// maxFastHead is the longest request head the fast path reads: a plain client's status
// request is 100–300 bytes. A longer one goes to net/http, whose limits apply.
const maxFastHead = 1024

// serveFast answers c's plain status requests until one is not (true: hand c on, with
// the bytes read of it) or the connection fails or times out (false: close it). Its
// deadlines are net/http's: the header timeout for the first request from the accept,
// the idle timeout between requests, then the header timeout for the rest of a head.
func (l *fastListener) serveFast(c *conn) bool {
	buf := make([]byte, maxFastHead)
	n := 0
	idle := false // the read deadline is the idle timeout's
	_ = c.SetReadDeadline(deadline(time.Now(), l.readHeader))
	for {
		req, end := parseFast(buf[:n])
		if end < 0 || (end == 0 && n == len(buf)) {
			c.in = buf[:n]
			return true
		}
		if end > 0 {
			switch l.answer(c, &req) {
			case answerHandOn:
				c.in = buf[:n]
				return true
			case answerFailed:
				return false
			}
			n = copy(buf, buf[end:n])
			if n == 0 {
				_ = c.SetReadDeadline(deadline(time.Now(), l.idle))
				idle = true
			}
			continue
		}
		if n > 0 && idle {
			_ = c.SetReadDeadline(deadline(time.Now(), l.readHeader))
			idle = false
		}
		select {
		case <-l.done: // after the deadlines above: Close's, set once done is closed, holds
			return false
		default:
		}
		m, err := c.Conn.Read(buf[n:])
		n += m
		if err != nil {
			return false // closed, reset or timed out: net/http would close it too
		}
	}
}

// deadline is now+d, or none for d ≤ 0.
func deadline(now time.Time, d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return now.Add(d)
}

type answerResult int

const (
	answerWritten answerResult = iota
	answerHandOn               // not one the fast path answers: net/http gets it
	answerFailed               // the write failed
)

// answer writes req's answer from the cache to c, in one write, as net/http would write
// it (the test compares them byte for byte), or leaves it to net/http.
func (l *fastListener) answer(c *conn, req *fastRequest) answerResult {
	s := l.s
	if s.opts.ReadAuth && s.authorize(string(req.auth), false) != nil {
		return answerHandOn
	}
	start := time.Now()
	cs, ok := s.cached(string(req.owner), string(req.repo), string(req.env), start)
	if !ok {
		return answerHandOn
	}
	body, length, gzipped := cs.encoded(string(req.encoding))
	buf := heldBufs.Get().(*[]byte)
	b := append((*buf)[:0], "HTTP/1.1 200 OK\r\n"...)
	if gzipped {
		b = append(b, "Content-Encoding: gzip\r\n"...)
	}
	b = append(b, "Content-Length: "...)
	b = append(b, length[0]...)
	b = append(b, "\r\nContent-Type: application/json\r\nVary: Accept-Encoding\r\nDate: "...)
	b = start.UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	if s.opts.Observe != nil {
		// Timed, as the middleware times net/http's, until the answer is handed to the
		// connection's writer (and before the client can have it: tests count them).
		s.opts.Observe(time.Since(start))
	}
	if l.write > 0 {
		_ = c.SetWriteDeadline(start.Add(l.write))
	}
	*buf = b
	_, err := c.Conn.Write(b)
	putHeld(buf)
	if err != nil {
		return answerFailed
	}
	return answerWritten
}

// fastRequest is what the fast path reads of a request; each field points into its head.
type fastRequest struct {
	owner, repo, env                []byte
	auth, accept, encoding          []byte
	hasAuth, hasAccept, hasEncoding bool
}

var (
	crlf          = []byte("\r\n")
	requestPrefix = []byte("GET /deployment/")
	http11        = []byte(" HTTP/1.1")
	envPrefix     = []byte("environment=")
)

// parseFast reads a request head from the start of b, which may hold only part of it.
// It returns the head's length once it is whole and a request the fast path answers:
// GET /deployment/{owner}/{repo}[?environment=E] HTTP/1.1 with names and values within
// the operation's limits in letters, digits and ._~-, a Host header, an Accept header (if
// any) that takes JSON, and no header that asks for more than a plain answer (a body, an
// upgrade, Connection, Expect, ...). It
// returns 0 while the head is not whole and each of its lines so far is one the fast path
// takes, and -1 as soon as a line is not: net/http, or huma, answers that request.
func parseFast(b []byte) (req fastRequest, end int) {
	line, rest, whole := bytes.Cut(b, crlf)
	if !whole {
		// Not even the request line yet: go on only while it can still be a fast one.
		if bytes.IndexByte(line, '\n') >= 0 || !bytes.HasPrefix(requestPrefix, line[:min(len(line), len(requestPrefix))]) {
			return req, -1
		}
		return req, 0
	}
	target, ok := bytes.CutPrefix(line, requestPrefix)
	if !ok {
		return req, -1
	}
	if target, ok = bytes.CutSuffix(target, http11); !ok {
		return req, -1
	}
	path, query, hasQuery := bytes.Cut(target, []byte("?"))
	var slash bool
	req.owner, req.repo, slash = bytes.Cut(path, []byte("/"))
	if !slash || !plainName(req.owner, 39) || !plainName(req.repo, 100) {
		return req, -1
	}
	if hasQuery {
		if req.env, ok = bytes.CutPrefix(query, envPrefix); !ok || !plainName(req.env, 63) && len(req.env) > 0 {
			return req, -1
		}
	}
	hasHost := false
	for {
		line, rest, whole = bytes.Cut(rest, crlf)
		if !whole {
			// A line begun: a header's name, or the CR of the blank line that ends the head.
			if bytes.IndexByte(line, '\n') >= 0 || len(line) > 0 && !headerName(line[:1]) && string(line) != "\r" {
				return req, -1
			}
			return req, 0
		}
		if len(line) == 0 {
			if !hasHost {
				return req, -1
			}
			if !takesJSON(string(req.accept)) {
				return req, -1
			}
			return req, len(b) - len(rest)
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		value = bytes.Trim(value, " \t")
		if !ok || !headerName(name) || !headerValue(value) {
			return req, -1
		}
		var seen *bool
		switch {
		case bytes.EqualFold(name, []byte("Host")):
			if len(value) == 0 || !hostValue(value) {
				return req, -1
			}
			seen = &hasHost
		case bytes.EqualFold(name, []byte("Authorization")):
			seen, req.auth = &req.hasAuth, value
		case bytes.EqualFold(name, []byte("Accept")):
			seen, req.accept = &req.hasAccept, value
		case bytes.EqualFold(name, []byte("Accept-Encoding")):
			seen, req.encoding = &req.hasEncoding, value
		case bytes.EqualFold(name, []byte("Content-Length")), bytes.EqualFold(name, []byte("Transfer-Encoding")),
			bytes.EqualFold(name, []byte("Connection")), bytes.EqualFold(name, []byte("Expect")),
			bytes.EqualFold(name, []byte("Upgrade")), bytes.EqualFold(name, []byte("Trailer")),
			bytes.EqualFold(name, []byte("Te")), bytes.EqualFold(name, []byte("Keep-Alive")),
			bytes.EqualFold(name, []byte("Proxy-Connection")), bytes.EqualFold(name, []byte("Http2-Settings")):
			return req, -1
		}
		if seen != nil {
			if *seen {
				return req, -1 // twice: net/http's reading of it is net/http's
			}
			*seen = true
		}
	}
}

// plainName is a path segment or value of 1 to max letters, digits and ._~- that is not
// . or .. (which net/http's mux would clean away).
func plainName(b []byte, max int) bool {
	if len(b) == 0 || len(b) > max || string(b) == "." || string(b) == ".." {
		return false
	}
	for _, ch := range b {
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '.' || ch == '_' || ch == '~' || ch == '-') {
			return false
		}
	}
	return true
}

// headerName is a header name of letters, digits and -.
func headerName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, ch := range b {
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '-') {
			return false
		}
	}
	return true
}

// headerValue is a header value of visible ASCII, spaces and tabs.
func headerValue(b []byte) bool {
	for _, ch := range b {
		if (ch < 0x20 && ch != '\t') || ch > 0x7e {
			return false
		}
	}
	return true
}

// hostValue is a host and port of letters, digits and .-:[] (a name or an address).
func hostValue(b []byte) bool {
	for _, ch := range b {
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '.' || ch == '-' || ch == ':' || ch == '[' || ch == ']') {
			return false
		}
	}
	return true
}
