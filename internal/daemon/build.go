package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"k8s.io/client-go/rest"

	"github.com/deployd/deployd/internal/api"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/dashboard"
	"github.com/deployd/deployd/internal/kube"
	"github.com/deployd/deployd/internal/leader"
	"github.com/deployd/deployd/internal/metrics"
	"github.com/deployd/deployd/internal/preview"
	"github.com/deployd/deployd/internal/source"
	"github.com/deployd/deployd/internal/view"
	"github.com/deployd/deployd/internal/webhook"
)

// Daemon is a built deployd: New builds its parts, Run starts them, Close stops them.
type Daemon struct {
	opts Options
	log  *slog.Logger

	watcher *config.Watcher
	// configMap, when set, is repos.yaml's ConfigMap, watched through the API.
	configMap *configMapRef
	restCfg   *rest.Config
	meter     *metrics.Metrics
	prober    *kube.Prober
	ln        net.Listener
	debugLn   net.Listener // nil without --debug-listen
	src       *source.Source
	view      *view.View
	parts     *parts
	ctl       *controller.Controller
	router    *leader.Router
	api       *api.Server
	srv       *http.Server
	health    *health
	previews  *preview.Service
	// previewSrc is the previews' own git cache.
	previewSrc *source.Source

	// work is the background work's context: it outlives Run's ctx until Close, so
	// in-flight work ends within the shutdown deadline rather than at the signal.
	work     context.Context
	stopWork context.CancelFunc
	wg       sync.WaitGroup
	// redo are the interrupted deployments found before serving (without election).
	redo []config.Key
	// lost tells that the leader lease was lost; stopElection releases the lease.
	lost         <-chan error
	stopElection func()
	// urgent makes Close stop at once: the HTTP server failed or the lease was lost.
	urgent bool
}

// New builds deployd's parts in their startup order: config, cluster, listeners, git
// source and view, the deployment path, the controller, the HTTP handlers. Nothing runs
// until Run.
func New(ctx context.Context, opts Options) (*Daemon, error) {
	opts.Config.GitHub = opts.GitHub.Enabled() // promoteFrom another cluster asks GitHub
	d := &Daemon{opts: opts, log: opts.Logger, stopElection: func() {}}
	d.work, d.stopWork = context.WithCancel(context.WithoutCancel(ctx))
	for _, step := range []func(context.Context) error{d.buildConfig, d.buildCluster, d.buildListeners, d.buildSource, d.buildParts, d.buildController, d.buildPreviews, d.buildHTTP} {
		if err := step(ctx); err != nil {
			d.Close() // what the steps before built
			return nil, err
		}
	}
	return d, nil
}

// buildConfig reads repos.yaml and makes the git cache directory.
func (d *Daemon) buildConfig(context.Context) error {
	watcher, err := config.NewWatcher(d.opts.ConfigPath, d.opts.Config)
	if err != nil {
		return fmt.Errorf("%s: %w", d.opts.ConfigPath, err)
	}
	d.watcher = watcher
	if d.opts.ConfigConfigMap != "" {
		ref, err := parseConfigMapRef(d.opts.ConfigConfigMap)
		if err != nil {
			return err
		}
		d.configMap = &ref
	}
	if err := os.MkdirAll(d.opts.CacheDir, 0o700); err != nil {
		return fmt.Errorf("creating the git cache directory: %w", err)
	}
	return nil
}

// buildCluster finds the cluster's credentials and counts the requests sent to it.
func (d *Daemon) buildCluster(context.Context) (err error) {
	if d.restCfg, err = kube.RESTConfig(d.opts.Kube); err != nil {
		return err
	}
	d.meter = metrics.New()
	kube.CountRequests(d.restCfg, d.meter.KubeRequest)
	d.prober, err = kube.NewProber(d.restCfg)
	return err
}

// buildListeners binds the HTTP (and pprof) addresses, so "address in use" is told at once.
func (d *Daemon) buildListeners(context.Context) (err error) {
	if d.ln, err = net.Listen("tcp", d.opts.Listen); err != nil {
		return fmt.Errorf("listening on %s: %w", d.opts.Listen, err)
	}
	d.debugLn, err = listenDebug(d.opts.DebugListen)
	return err
}

// buildSource sets up the git caches (dropping those of repos no longer configured) and
// the view the API serves.
func (d *Daemon) buildSource(context.Context) error {
	cfg := d.watcher.State().Config
	d.log.Info("deployd started", "config", d.opts.ConfigPath, "configmap", d.opts.ConfigConfigMap, "repos", len(cfg.Repos), "cluster", d.restCfg.Host, "listen", d.ln.Addr().String())
	srcOpts := source.DefaultOptions()
	srcOpts.CacheDir, srcOpts.Timeout = d.opts.CacheDir, d.opts.GitTimeout
	srcOpts.MaxFetchBytes, srcOpts.MaxObjectBytes = int64(d.opts.GitMaxFetchMiB)<<20, int64(d.opts.GitMaxObjectMiB)<<20
	d.src = source.New(srcOpts)
	pruneCaches(d.src, cfg, d.log)
	d.meter.GitCache(d.src.DiskUse)
	d.view = view.New(d.opts.HistoryLimit)
	d.view.SetConfig(cfg)
	return nil
}

// buildParts builds the deployment path, in deployd's namespace (created if missing).
func (d *Daemon) buildParts(ctx context.Context) (err error) {
	ensureStateNamespace(ctx, d.restCfg, d.opts.Namespace, d.log)
	if d.parts, err = newParts(d.work, &d.wg, d.restCfg, d.src, d.view, d.opts, d.meter, d.log); err != nil {
		return err
	}
	if err := d.parts.buildReporting(d.opts, d.meter, d.log); err != nil {
		return err
	}
	d.parts.buildGate()
	return nil
}

// buildController builds the work queue and the router that routes requests to it.
func (d *Daemon) buildController(context.Context) error {
	ctlOpts := d.opts.Controller
	ctlOpts.Observe = func(o controller.Outcome) {
		logOutcome(d.log, o)
		var checkErr error
		if o.Action == controller.ActionCheckFailed {
			checkErr = o.Err
		}
		d.view.Observe(o.Key, o.Result.Revision, checkErr)
		d.meter.Outcome(o)
	}
	d.ctl = controller.New(d.src, d.parts.gate, ctlOpts)
	d.meter.QueueDepth(d.ctl.Len)
	d.parts.ctl = d.ctl
	d.router = leader.NewRouter(replica{d.parts, d.log}, d.parts.kube, d.opts.Namespace, d.log)
	d.parts.leading = d.router.Leading
	d.router.SetConfig(d.watcher.State().Config)
	return nil
}

// queue is where webhooks and API requests go: the local controller, or with leader
// election the router, which hands a follower's requests to the leader.
func (d *Daemon) queue() interface {
	webhook.Queue
	api.Queue
} {
	if d.opts.LeaderElect {
		return d.router
	}
	return controller.Local(d.ctl)
}

// buildHTTP builds the HTTP server: the API, the dashboard, health, webhooks, metrics.
func (d *Daemon) buildHTTP(context.Context) error {
	if d.opts.WebhookSecretFile == "" {
		d.log.Warn("webhooks are off: start deployd with --webhook-secret-file to accept GitHub pushes")
	}
	hooks := webhook.New(d.queue(), d.opts.WebhookSecretFile, d.opts.Webhook, func(r webhook.Result) { logDelivery(d.log, r); d.meter.Delivery(r) })
	hooks.SetPreviews(d.previews)
	d.health = &health{watcher: d.watcher, synced: d.parts.tracker.Synced}
	deps := api.Deps{View: d.view, Queue: d.queue(), Config: d.watcher, Statuses: d.parts.tracker, Objects: d.parts.applier, Pauser: d.parts, Drift: replicaDrift{d.parts}, Previews: d.previews}
	d.api = api.New(deps, api.Options{TokenFile: d.opts.APITokenFile, ReadAuth: d.opts.APIReadAuth, PublicURL: d.opts.PublicURL, Streams: d.opts.APIStreams, Log: d.log,
		Observe: d.meter.Timer(api.StatusRoute, http.MethodGet, http.StatusOK)})
	mux := http.NewServeMux()
	mux.Handle("/", d.api.Handler())
	dash := dashboard.Handler() // the page at / and its assets; the API keeps every other path
	mux.Handle("GET /{$}", dash)
	mux.Handle("GET "+dashboard.AssetPrefix, dash)
	mux.Handle("GET /healthz", d.health.routes())
	mux.Handle("GET /readyz", d.health.routes())
	mux.Handle("/webhooks/github", hooks)
	mux.Handle("GET /metrics", d.meter.Handler())
	d.srv = &http.Server{
		Handler:           d.meter.Middleware(mux),
		ConnContext:       api.ConnContext,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	d.srv.RegisterOnShutdown(d.api.CloseStreams)
	return nil
}
