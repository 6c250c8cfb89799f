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
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/kube"
	"github.com/deployd/deployd/internal/source"
	"github.com/deployd/deployd/internal/webhook"
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
	// WebhookSecretFile holds the GitHub webhook secret; webhooks are refused without it.
	WebhookSecretFile string
	// Controller configures the work queue (Concurrency is --concurrency).
	Controller controller.Options
	// GitTimeout bounds each git network operation.
	GitTimeout time.Duration
	// Deployer receives each revision to deploy; the default logs it (apply comes with issue 4).
	Deployer controller.Deployer
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
		Controller:      controller.DefaultOptions(),
		GitTimeout:      source.DefaultOptions().Timeout,
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

	srcOpts := source.DefaultOptions()
	srcOpts.CacheDir, srcOpts.Timeout = opts.CacheDir, opts.GitTimeout
	deployer := opts.Deployer
	if deployer == nil {
		deployer = logDeployer(log)
	}
	ctlOpts := opts.Controller
	ctlOpts.Observe = func(o controller.Outcome) { logOutcome(log, o) }
	ctl := controller.New(source.New(srcOpts), deployer, ctlOpts)
	ctl.SetConfig(cfg)
	if opts.WebhookSecretFile == "" {
		log.Warn("webhooks are off: start deployd with --webhook-secret-file to accept GitHub pushes")
	}
	hooks := webhook.New(ctl, opts.WebhookSecretFile, func(r webhook.Result) { logDelivery(log, r) })

	health := &health{watcher: watcher}
	mux := http.NewServeMux()
	mux.Handle("/", health.routes())
	mux.Handle("/webhooks/github", hooks)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { health.probeLoop(work, prober, opts.ProbeInterval, log) })
	wg.Go(func() { ctl.Run(work) })
	wg.Go(func() {
		onReload := func(r config.Reload) {
			logReload(log, r)
			if r.Err == nil {
				ctl.SetConfig(r.Config)
			}
		}
		if err := watcher.Run(work, onReload); err != nil {
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
