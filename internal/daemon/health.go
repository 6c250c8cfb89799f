package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deployd/deployd/internal/config"
)

// health answers /healthz and /readyz.
type health struct {
	watcher *config.Watcher
	// synced, when set, tells whether the status watches have their initial lists.
	synced func() bool

	// stopping is set when shutdown starts: /readyz fails, so endpoints drop this replica.
	stopping atomic.Bool

	mu         sync.Mutex
	clusterErr error
	probed     bool
}

// prober is what health needs of the cluster connection.
type prober interface {
	Probe(ctx context.Context) error
}

func (h *health) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", h.readyz)
	return mux
}

// readyz lists each check, Kubernetes-style, and answers 503 unless all pass.
func (h *health) readyz(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	clusterErr, probed := h.clusterErr, h.probed
	h.mu.Unlock()

	var b strings.Builder
	ok := true
	check := func(name string, err error) {
		if err != nil {
			ok = false
			fmt.Fprintf(&b, "[-]%s failed: %v\n", name, err)
			return
		}
		fmt.Fprintf(&b, "[+]%s ok\n", name)
	}
	check("config", nil) // deployd does not start without a valid config
	if h.stopping.Load() {
		check("shutdown", fmt.Errorf("shutting down"))
	}
	if !probed {
		clusterErr = fmt.Errorf("not checked yet")
	}
	check("cluster", clusterErr)
	if h.synced != nil {
		var err error
		if !h.synced() {
			err = fmt.Errorf("status watches are still listing")
		}
		check("caches", err)
	}
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprint(w, b.String())
}

// probeLoop checks the cluster now and every interval until ctx ends, logging changes.
func (h *health) probeLoop(ctx context.Context, p prober, interval time.Duration, log *slog.Logger) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := p.Probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		h.mu.Lock()
		changed := !h.probed || (err == nil) != (h.clusterErr == nil)
		h.clusterErr, h.probed = err, true
		h.mu.Unlock()
		if changed && err != nil {
			log.Warn("cluster not reachable", "err", err)
		} else if changed {
			log.Info("cluster reachable")
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
