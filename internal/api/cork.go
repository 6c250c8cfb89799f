package api

import (
	"context"
	"net"
	"net/http"
	"syscall"
)

// connKey is the context key under which ConnContext keeps a request's connection.
type connKey struct{}

// ConnContext is for http.Server.ConnContext: it lets the status cache reach a request's
// TCP connection to send a large answer as one segment (see writeCorked).
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			return context.WithValue(ctx, connKey{}, raw)
		}
	}
	return ctx
}

// corkAbove is the answer size above which net/http sends it in two writes: it buffers
// 4 KB of a connection's output, headers first.
const corkAbove = 4096 - 512

// writeCorked writes body, flushed, as one TCP segment where the connection allows:
// net/http sends an answer bigger than its 4 KB buffer in two writes, each a segment,
// and on loopback or a fast network each costs the sender the receiver's work too (a
// fifth of a status request's CPU). TCP_CORK holds the first until the second joins it.
// Anything that fails falls back to the plain write.
func writeCorked(w http.ResponseWriter, r *http.Request, body []byte) {
	raw, _ := r.Context().Value(connKey{}).(syscall.RawConn)
	if raw == nil || len(body) <= corkAbove || cork(raw, 1) != nil {
		_, _ = w.Write(body)
		return
	}
	_, _ = w.Write(body)
	_ = http.NewResponseController(w).Flush()
	_ = cork(raw, 0)
}

// cork sets the connection's TCP_CORK to on.
func cork(raw syscall.RawConn, on int) error {
	var err error
	if cerr := raw.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, on)
	}); cerr != nil {
		return cerr
	}
	return err
}
