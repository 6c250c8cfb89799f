package api

import (
	"context"
	"net"
	"net/http"
	"sync"
)

// connKey is the context key under which ConnContext keeps a request's connection.
type connKey struct{}

// conn is a connection Listener accepted. Only the goroutine serving its requests reads
// and writes it.
type conn struct {
	net.Conn
	in   []byte  // read on the fast path, for net/http to read first
	held *[]byte // while not nil, writes are appended here (writeWhole)
}

func (c *conn) Read(p []byte) (int, error) {
	if len(c.in) > 0 {
		n := copy(p, c.in)
		c.in = c.in[n:]
		if len(c.in) == 0 {
			c.in = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *conn) Write(p []byte) (int, error) {
	if c.held != nil {
		*c.held = append(*c.held, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// CloseWrite keeps net/http's graceful close, which half-closes a TCP connection.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ConnContext is for http.Server.ConnContext: it lets the status cache reach a request's
// connection, when Server.Listener accepted it.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if hc, ok := c.(*conn); ok {
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
	c, _ := r.Context().Value(connKey{}).(*conn)
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
	putHeld(buf)
}

// putHeld returns a held answer's buffer to heldBufs, emptied, unless it grew past 64 KB.
func putHeld(buf *[]byte) {
	if cap(*buf) <= 64<<10 {
		*buf = (*buf)[:0]
		heldBufs.Put(buf)
	}
}
