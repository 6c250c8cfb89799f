// Package daemon wires deployd's parts together and runs them until shutdown: the
// config watcher, the cluster connection and the HTTP server.
package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net"
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
	"github.com/deployd/deployd/internal/drift"
	"github.com/deployd/deployd/internal/kube"
	"github.com/deployd/deployd/internal/leader"
	"github.com/deployd/deployd/internal/preview"
	"github.com/deployd/deployd/internal/report"
	"github.com/deployd/deployd/internal/source"
	"github.com/deployd/deployd/internal/tag"
	"github.com/deployd/deployd/internal/webhook"
)

// Options configure a running deployd.
type Options struct {
	// ConfigPath is repos.yaml's path.
	ConfigPath string
	// Config controls how repos.yaml is read.
	Config config.Options
	// ConfigConfigMap, when set (NAMESPACE/NAME), is a ConfigMap whose key repos.yaml is
	// watched through the API besides the file at ConfigPath; the newest change wins.
	ConfigConfigMap string
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
	// Webhook bounds the webhook's reads and remembers its deliveries.
	Webhook webhook.Options
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
	// APIStreams bound the API's event streams.
	APIStreams api.StreamOptions
	// GitHub says how to report to GitHub; reporting is off without credentials.
	GitHub report.ClientOptions
	// HistoryLimit is how many deployment records are kept per repo and environment.
	HistoryLimit int
	// Drift configures drift detection and correction (back-off of fighting writers).
	Drift drift.Options
	// Previews configures pull request previews (the Publisher below publishes them).
	Previews preview.Options
	// PreviewPublisher publishes previews on GitHub (checks.Publisher); nil keeps them
	// in deployd's API only.
	PreviewPublisher preview.Publisher
	// Tagging bounds the pushes of deployment tags (retries, backoff, pending tags).
	Tagging tag.Options
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
		Previews:        preview.DefaultOptions(),
		Tagging:         tag.DefaultOptions(),
		Controller:      controller.DefaultOptions(),
		Webhook:         webhook.DefaultOptions(),
		APIStreams:      api.DefaultStreamOptions(),
		GitTimeout:      source.DefaultOptions().Timeout,
		GitMaxFetchMiB:  source.DefaultMaxFetchBytes >> 20,
		GitMaxObjectMiB: source.DefaultMaxObjectBytes >> 20,
		LeaderElection:  leader.DefaultOptions(""),
		Logger:          slog.Default(),
	}
}

// Run starts deployd and blocks until ctx is cancelled, then shuts down gracefully
// within opts.ShutdownTimeout. It returns an error when it could not start, or when a
// part failed (the HTTP server, the leader lease).
func Run(ctx context.Context, opts Options) error {
	d, err := New(ctx, opts)
	if err != nil {
		return err
	}
	err = d.Run(ctx)
	d.Close()
	return err
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
		log.Error("could not check deployd's namespace: deploys fail until it exists", "namespace", name, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		return
	case apierrors.IsForbidden(err):
		log.Debug("deployd may not read namespaces; taking its own namespace as there", "namespace", name, "err", err)
		return
	case !apierrors.IsNotFound(err):
		log.Warn("could not check deployd's namespace: deploys fail until it exists", "namespace", name, "err", err)
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
