package cli

import (
	"context"
	"log/slog"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// expectedLeaseRace is what client-go's leader election logs as an error when two replicas
// start at once: both find no Lease, both create it, and the one whose create is refused
// as AlreadyExists follows the other on its next try. It is how election works, not a
// fault, so deployd logs it at debug level (a first start stays quiet).
const expectedLeaseRace = "Error initially creating lease lock"

// clientGoHandler passes client-go's messages on, lowering the expected lease race to debug.
type clientGoHandler struct{ slog.Handler }

func (h clientGoHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError && r.Message == expectedLeaseRace && hasAlreadyExists(r) {
		if !h.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	return h.Handler.Handle(ctx, r)
}

func (h clientGoHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return clientGoHandler{h.Handler.WithAttrs(as)}
}

func (h clientGoHandler) WithGroup(name string) slog.Handler {
	return clientGoHandler{h.Handler.WithGroup(name)}
}

func hasAlreadyExists(r slog.Record) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && apierrors.IsAlreadyExists(err) {
			found = true
		}
		return !found
	})
	return found
}

// clientGoLogger is the logger client-go's messages go to.
func clientGoLogger(l *slog.Logger) *slog.Logger {
	return slog.New(clientGoHandler{l.Handler()}).With("component", "client-go")
}
