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
	"runtime/debug"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/deployd/deployd/internal/api"
	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/dashboard"
	"github.com/deployd/deployd/internal/drift"
	"github.com/deployd/deployd/internal/kube"
	"github.com/deployd/deployd/internal/leader"
	"github.com/deployd/deployd/internal/metrics"
	"github.com/deployd/deployd/internal/report"
	"github.com/deployd/deployd/internal/source"
	"github.com/deployd/deployd/internal/view"
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
	// DebugListen, when set, serves pprof at this loopback address (e.g. 127.0.0.1:6060).
	DebugListen string
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
	// GitMaxFetchMiB and GitMaxObjectMiB bound a fetch's pack and each object in it (0: none).
	GitMaxFetchMiB, GitMaxObjectMiB int
	// Namespace is deployd's own namespace, where it keeps its state (ConfigMaps).
	Namespace string
	// APITokenFile holds the bearer token of the API's write endpoints.
	APITokenFile string
	// APIReadAuth requires the token on the API's read endpoints too.
	APIReadAuth bool
	// GitHub says how to report to GitHub; reporting is off without credentials.
	GitHub report.ClientOptions
	// HistoryLimit is how many deployment records are kept per repo and environment.
	HistoryLimit int
	// Drift configures drift detection and correction (back-off of fighting writers).
	Drift drift.Options
	// Deployer receives each revision to deploy; the default renders, applies and waits.
	Deployer controller.Deployer
	// LeaderElect makes this replica one of several: only the elected leader checks and
	// deploys; the others serve reads and hand requests to it.
	LeaderElect bool
	// LeaderElection configures the election (its namespace is Namespace).
	LeaderElection leader.Options
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
		Kube:            kube.ConfigOptions{QPS: kube.DefaultQPS, Burst: kube.DefaultBurst},
		CacheDir:        filepath.Join(cache, "deployd", "git"),
		ShutdownTimeout: 30 * time.Second,
		ProbeInterval:   10 * time.Second,
		Namespace:       ownNamespace(),
		HistoryLimit:    50,
		Drift:           drift.DefaultOptions(),
		Controller:      controller.DefaultOptions(),
		GitTimeout:      source.DefaultOptions().Timeout,
		GitMaxFetchMiB:  source.DefaultMaxFetchBytes >> 20,
		GitMaxObjectMiB: source.DefaultMaxObjectBytes >> 20,
		LeaderElection:  leader.DefaultOptions(""),
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
	var ctl *controller.Controller
	meter := metrics.New(func() int { return ctl.Len() })
	kube.CountRequests(restCfg, meter.KubeRequest)
	prober, err := kube.NewProber(restCfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", opts.Listen, err)
	}
	debug, err := listenDebug(opts.DebugListen)
	if err != nil {
		ln.Close()
		return err
	}
	cfg := watcher.State().Config
	log.Info("deployd started", "config", opts.ConfigPath, "repos", len(cfg.Repos), "cluster", restCfg.Host, "listen", ln.Addr().String())

	srcOpts := source.DefaultOptions()
	srcOpts.CacheDir, srcOpts.Timeout = opts.CacheDir, opts.GitTimeout
	srcOpts.MaxFetchBytes, srcOpts.MaxObjectBytes = int64(opts.GitMaxFetchMiB)<<20, int64(opts.GitMaxObjectMiB)<<20
	src := source.New(srcOpts)
	pruneCaches(src, cfg, log)
	meter.GitCache(src.DiskUse)
	state := view.New(opts.HistoryLimit)
	state.SetConfig(cfg)
	var p *parts
	dep := opts.Deployer
	if dep == nil {
		ensureStateNamespace(ctx, restCfg, opts.Namespace, log)
		if p, err = newParts(restCfg, src, state, opts, log); err != nil {
			return err
		}
		dep = p.runner
	}
	runner := p.runnerOrNil()
	ctlOpts := opts.Controller
	ctlOpts.Observe = func(o controller.Outcome) {
		logOutcome(log, o)
		var checkErr error
		if o.Action == controller.ActionCheckFailed {
			checkErr = o.Err
		}
		state.Observe(o.Key, o.Result.Revision, checkErr)
	}
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	observe := ctlOpts.Observe
	ctlOpts.Observe = func(o controller.Outcome) { observe(o); meter.Outcome(o) }
	if p != nil {
		p.meter = meter
		meter.Drift(p.drift.Counts)
		if err := p.startReporting(work, opts, meter, log); err != nil {
			return err
		}
	}
	ctl = controller.New(src, dep, ctlOpts)
	var wg sync.WaitGroup
	if opts.LeaderElect && p == nil {
		return errors.New("leader election needs the deployment path (no test deployer)")
	}
	var rs *roles
	var queue interface {
		webhook.Queue
		api.Queue
	} = ctl
	if p != nil {
		rs = newRoles(ctl, p, p.kube, opts.Namespace, log)
		p.leading = rs.leading.Load
		rs.setConfig(cfg)
		p.ctl = ctl
		p.tracker.Start(work)
		if opts.LeaderElect {
			queue = rs
			if err := rs.watchStates(work, p.kube, opts.Namespace); err != nil {
				return err
			}
			rs.follow(ctx, cfg)
		}
	}
	var redo []config.Key
	if rs != nil && !opts.LeaderElect {
		redo = rs.lead(ctx, cfg, time.Time{}) // before serving: a restart shows its history at once
	}
	ctl.SetConfig(cfg)
	// lead runs the work queue, at once or once elected, until ctx ends.
	lead := func(ctx context.Context, since time.Time) {
		if rs != nil && opts.LeaderElect {
			redo = rs.lead(ctx, watcher.State().Config, since)
		}
		for _, k := range redo {
			ctl.Enqueue(k, controller.Request{Trigger: controller.TriggerStartup, Force: true})
		}
		go releaseAfterStartup(ctx, ctl.Idle)
		ctl.Run(ctx)
	}
	if opts.WebhookSecretFile == "" {
		log.Warn("webhooks are off: start deployd with --webhook-secret-file to accept GitHub pushes")
	}
	hooks := webhook.New(queue, opts.WebhookSecretFile, func(r webhook.Result) { logDelivery(log, r); meter.Delivery(r) })

	health := &health{watcher: watcher}
	if p != nil {
		health.synced = p.tracker.Synced
	}
	apiServer := api.New(p.apiDeps(state, queue, watcher), api.Options{TokenFile: opts.APITokenFile, ReadAuth: opts.APIReadAuth, PublicURL: opts.PublicURL})
	mux := http.NewServeMux()
	mux.Handle("/", apiServer.Handler())
	dash := dashboard.Handler() // the page at / and its assets; the API keeps every other path
	mux.Handle("GET /{$}", dash)
	mux.Handle("GET "+dashboard.AssetPrefix, dash)
	mux.Handle("GET /healthz", health.routes())
	mux.Handle("GET /readyz", health.routes())
	mux.Handle("/webhooks/github", hooks)
	mux.Handle("GET /metrics", meter.Handler())
	srv := &http.Server{
		Handler:           meter.Middleware(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(apiServer.CloseStreams)

	wg.Go(func() { health.probeLoop(work, prober, opts.ProbeInterval, log) })
	lost, stopElection := elect(work, &wg, restCfg, opts, log, lead)
	defer stopElection()
	wg.Go(func() {
		onReload := func(r config.Reload) {
			logReload(log, r)
			if r.Err == nil {
				pruneCaches(src, r.Config, log)
				state.SetConfig(r.Config)
				if rs != nil {
					rs.setConfig(r.Config)
				}
				ctl.SetConfig(r.Config)
			}
		}
		if err := watcher.Run(work, onReload); err != nil {
			log.Error("config watcher stopped: reloads are off until restart", "err", err)
		}
	})
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if debug != nil {
		log.Info("serving pprof", "listen", debug.Addr().String())
		go func() { _ = debugServer().Serve(debug) }()
		defer debug.Close()
	}
	if opts.Listening != nil {
		opts.Listening(ln.Addr())
	}

	// stopNow ends the background work at once; waits end unrecorded, and the next
	// leader marks them interrupted and redoes them.
	stopNow := func() {
		stopWork()
		wg.Wait()
		if runner != nil {
			runner.Close()
		}
	}
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		stopNow()
		return fmt.Errorf("serving HTTP: %w", err)
	case err := <-lost:
		// A replica that lost the lease stops at once: another may be deploying already.
		log.Error("stopping: this replica is no longer the leader; a restart rejoins as a follower", "err", err)
		_ = srv.Close()
		stopNow()
		return err
	}
	log.Info("shutting down", "timeout", opts.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opts.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("HTTP requests still running at the shutdown deadline were cut off", "err", err)
		_ = srv.Close()
	}
	done := make(chan struct{})
	go func() {
		stopNow()
		close(done)
	}()
	select {
	case <-done:
	case <-shutdownCtx.Done():
		log.Warn("background work did not stop before the shutdown deadline")
	}
	stopElection() // the lease is released once the work stopped: a follower takes over at once
	log.Info("stopped")
	return nil
}

// pruneCaches removes the git caches of repos that are not in cfg (removed, or moved to
// another URL), so the cache volume holds only what is checked.
func pruneCaches(src *source.Source, cfg *config.Config, log *slog.Logger) {
	removed, err := src.Prune(cfg.Repos)
	if err != nil {
		log.Warn("could not remove the git caches of repos no longer configured", "err", err)
	}
	if len(removed) > 0 {
		log.Info("removed the git caches of repos no longer configured (or whose URL changed)", "caches", removed)
	}
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

// ownNamespace is the namespace deployd runs in (its pod's), else "deployd".
func ownNamespace() string {
	b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if ns := strings.TrimSpace(string(b)); err == nil && ns != "" {
		return ns
	}
	return "deployd"
}

// ensureStateNamespace creates deployd's namespace when it is missing (a laptop cluster);
// where deployd may not, it says so once: deploys fail until the namespace exists.
func ensureStateNamespace(ctx context.Context, cfg *rest.Config, name string, log *slog.Logger) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{}); err == nil || !apierrors.IsNotFound(err) {
		return
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{apply.LabelManagedBy: apply.ManagedByValue}}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		log.Error("deployd's namespace does not exist and could not be created: deploys fail until it does (kubectl create namespace "+name+")", "err", err)
		return
	}
	log.Info("created deployd's namespace for its state", "namespace", name)
}

// elect runs lead in wg: at once, or with leader election on, once this replica is
// elected, until it stops leading or work ends. lost tells that the lease was lost
// (or the election could not start); stop ends the election and releases the lease.
func elect(work context.Context, wg *sync.WaitGroup, cfg *rest.Config, opts Options, log *slog.Logger, lead func(context.Context, time.Time)) (lost <-chan error, stop func()) {
	if !opts.LeaderElect {
		wg.Go(func() { lead(work, time.Time{}) })
		return nil, func() {}
	}
	lopts := opts.LeaderElection
	lopts.Namespace = opts.Namespace
	elected := make(chan context.Context, 1)
	errs := make(chan error, 1)
	ectx, cancel := context.WithCancel(context.WithoutCancel(work))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := leader.Run(ectx, cfg, lopts, log, func(lctx context.Context) { elected <- lctx }); err != nil {
			errs <- err
		}
	}()
	wg.Go(func() {
		select {
		case lctx := <-elected:
			lctx, cancel := context.WithCancel(lctx)
			defer context.AfterFunc(work, cancel)()
			defer cancel()
			// Requests handed over since the last leader may have died are acted on.
			lead(lctx, time.Now().Add(-lopts.LeaseDuration-lopts.RetryPeriod))
		case <-work.Done():
		}
	})
	var once sync.Once
	return errs, func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
			}
		})
	}
}

// releaseAfterStartup hands the memory of the startup burst back to the OS once the work
// queue has been idle for a few seconds: checking and deploying every repo at once peaks
// far above what deployd holds afterwards (at 1,000 repos, about 200 MB against 45 MB
// live), and the Go runtime would keep it for reuse.
func releaseAfterStartup(ctx context.Context, idle func() bool) {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for quiet := 0; quiet < 3; {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if idle() {
			quiet++
		} else {
			quiet = 0
		}
	}
	debug.FreeOSMemory()
}
