// Package daemon wires deployd's parts together and runs them until shutdown: the
// config watcher, the cluster connection and the HTTP server.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/kube"
)

// Options configure a running deployd.
type Options struct {
	// ConfigPath is repos.yaml's path.
	ConfigPath string
	// Config controls how repos.yaml is read.
	Config config.Options
	// Kube says where the cluster credentials come from.
	Kube kube.ConfigOptions
	// Listen is the HTTP address, e.g. ":8080" or "127.0.0.1:0".
	Listen string
	// CacheDir holds the git clones.
	CacheDir string
	// PublicURL is the base of the links deployd hands out.
	PublicURL string
	// ShutdownTimeout bounds how long in-flight work may take after a stop signal.
	ShutdownTimeout time.Duration
	// ProbeInterval is how often the cluster's reachability is checked for /readyz.
	ProbeInterval time.Duration
	// Logger receives deployd's log.
	Logger *slog.Logger
	// Listening, when set, is called with the bound address before serving.
	Listening func(net.Addr)
}

// DefaultOptions returns deployd's defaults.
func DefaultOptions() Options {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	return Options{
		ConfigPath:      "repos.yaml",
		Config:          config.DefaultOptions(),
		Listen:          ":8080",
		CacheDir:        filepath.Join(cache, "deployd", "git"),
		ShutdownTimeout: 30 * time.Second,
		ProbeInterval:   10 * time.Second,
		Logger:          slog.Default(),
	}
}

// Run starts deployd and blocks until ctx is cancelled, then shuts down gracefully
// within opts.ShutdownTimeout. It returns an error only when it could not start.
func Run(ctx context.Context, opts Options) error {
	log := opts.Logger
	watcher, err := config.NewWatcher(opts.ConfigPath, opts.Config)
	if err != nil {
		return fmt.Errorf("%s: %w", opts.ConfigPath, err)
	}
	if err := os.MkdirAll(opts.CacheDir, 0o700); err != nil {
		return fmt.Errorf("creating the git cache directory: %w", err)
	}
	restCfg, err := kube.RESTConfig(opts.Kube)
	if err != nil {
		return err
	}
	prober, err := kube.NewProber(restCfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", opts.Listen, err)
	}
	cfg := watcher.State().Config
	log.Info("deployd started", "config", opts.ConfigPath, "repos", len(cfg.Repos), "cluster", restCfg.Host, "listen", ln.Addr().String())

	health := &health{watcher: watcher}
	srv := &http.Server{
		Handler:           health.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { health.probeLoop(work, prober, opts.ProbeInterval, log) })
	wg.Go(func() {
		if err := watcher.Run(work, func(r config.Reload) { logReload(log, r) }); err != nil {
			log.Error("config watcher stopped: reloads are off until restart", "err", err)
		}
	})
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if opts.Listening != nil {
		opts.Listening(ln.Addr())
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		stopWork()
		wg.Wait()
		return fmt.Errorf("serving HTTP: %w", err)
	}
	log.Info("shutting down", "timeout", opts.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opts.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("HTTP requests still running at the shutdown deadline were cut off", "err", err)
		_ = srv.Close()
	}
	stopWork()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-shutdownCtx.Done():
		log.Warn("background work did not stop before the shutdown deadline")
	}
	log.Info("stopped")
	return nil
}

func logReload(log *slog.Logger, r config.Reload) {
	if r.Err != nil {
		var cfgErr *config.Error
		if errors.As(r.Err, &cfgErr) {
			for _, p := range cfgErr.Problems {
				log.Error("config reload refused, keeping the last good config", "problem", p.String())
			}
			return
		}
		log.Error("config reload failed, keeping the last good config", "err", r.Err)
		return
	}
	ch := config.Diff(r.Previous, r.Config)
	log.Info("config reloaded", "repos", len(r.Config.Repos),
		"added", keys(ch.Added), "removed", keys(ch.Removed), "changed", keys(ch.Changed))
}

func keys(ks []config.Key) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.String()
	}
	return out
}
