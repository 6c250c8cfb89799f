package api

import (
	"context"
	"net"
	"net/http"
	"sync"
)

// connKey is the context key under which ConnContext keeps a request's connection.
type connKey struct{}

// Listener wraps l so that the status cache can send a large answer in one write (see
// writeWhole). Serve the HTTP server on it, with ConnContext as its ConnContext.
func Listener(l net.Listener) net.Listener { return holdListener{l} }

type holdListener struct{ net.Listener }

func (l holdListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	return &holdConn{Conn: c}, nil
}

// holdConn is a connection whose writes can be held in memory and then sent as one.
// Only the goroutine serving the connection's requests writes to it.
type holdConn struct {
	net.Conn
	held *[]byte // while not nil, writes are appended here
}

func (c *holdConn) Write(p []byte) (int, error) {
	if c.held != nil {
		*c.held = append(*c.held, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// CloseWrite keeps net/http's graceful close, which half-closes a TCP connection.
func (c *holdConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ConnContext is for http.Server.ConnContext: it lets the status cache reach a request's
// connection, when Listener accepted it.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if hc, ok := c.(*holdConn); ok {
		return context.WithValue(ctx, connKey{}, hc)
	}
	return ctx
}

// wholeAbove is the answer size above which net/http sends it in two writes: it buffers
// 4 KB of a connection's output, headers first.
const wholeAbove = 4096 - 512

// heldBufs are the buffers of answers being held; one is in use per answer in flight,
// not one per connection.
var heldBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// writeWhole writes body, flushed, in one write to the connection where it can: net/http
// sends an answer bigger than its 4 KB buffer in two writes, each a TCP segment, and on
// loopback or a fast network each costs the sender the receiver's work too. Holding the
// first until the second joins it costs a copy of the answer; TCP_CORK did the same in
// the kernel for two more system calls an answer.
func writeWhole(w http.ResponseWriter, r *http.Request, body []byte) {
	c, _ := r.Context().Value(connKey{}).(*holdConn)
	if c == nil || len(body) <= wholeAbove {
		_, _ = w.Write(body)
		return
	}
	buf := heldBufs.Get().(*[]byte)
	c.held = buf
	_, _ = w.Write(body)
	_ = http.NewResponseController(w).Flush()
	c.held = nil
	// An error means the connection is broken: net/http finds out at its next read.
	_, _ = c.Conn.Write(*buf)
	if cap(*buf) <= 64<<10 {
		*buf = (*buf)[:0]
		heldBufs.Put(buf)
	}
}
