// Package cli is deployd's command line: it reads flags (and DEPLOYD_* environment
// variables), then runs the daemon or a subcommand such as check.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/daemon"
	"github.com/deployd/deployd/internal/gcpace"
	"github.com/deployd/deployd/internal/version"
)

// ExitError ends the program with Code after its output was already written.
type ExitError struct {
	Code int
}

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Run runs deployd with args (without the program name). Subcommands: check, render, version,
// and the client commands status, sync, pause, resume, rollback, wait and promote; none runs the
// daemon until ctx is cancelled.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "check":
			return check(args[1:], stdout, stderr)
		case "render":
			return renderCmd(ctx, args[1:], stdout, stderr)
		case "version":
			fmt.Fprintln(stdout, version.String())
			return nil
		case "status":
			return runClient(status(args[1:], stdout, stderr), stderr)
		case "sync", "pause", "resume", "rollback":
			return runClient(action(args[0], args[1:], stdout, stderr), stderr)
		case "wait":
			return runClient(waitCmd(args[1:], stdout, stderr), stderr)
		case "diff":
			return diffCmd(args[1:], stdout, stderr)
		case "promote":
			return runClient(promoteCmd(args[1:], stdout, stderr), stderr)
		}
	}
	var hook func(*daemon.Options)
	if RouteClientGoLogs {
		hook = func(o *daemon.Options) { klog.SetSlogLogger(clientGoLogger(o.Logger)) }
	}
	return serve(ctx, args, stdout, stderr, hook)
}

// serveFlags are the daemon's flags, bound to its options.
type serveFlags struct {
	opts        daemon.Options
	logFormat   string
	logLevel    string
	showVersion bool
}

func newServeFlags(stderr io.Writer) (*flag.FlagSet, *serveFlags) {
	f := &serveFlags{opts: daemon.DefaultOptions(), logFormat: "text", logLevel: "info"}
	fs := flag.NewFlagSet("deployd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &f.opts
	fs.StringVar(&o.ConfigPath, "config", o.ConfigPath, "path to repos.yaml")
	fs.StringVar(&o.ConfigConfigMap, "config-configmap", "", "also watch repos.yaml in this ConfigMap (NAMESPACE/NAME, key repos.yaml) through the API: edits act at once; off when empty")
	fs.StringVar(&o.Kube.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&o.Kube.Context, "context", "", "kubeconfig context (default: its current context)")
	fs.StringVar(&o.Listen, "listen", o.Listen, "HTTP listen address")
	fs.StringVar(&o.DebugListen, "debug-listen", "", "serve pprof at this loopback address (e.g. 127.0.0.1:6060); off when empty")
	fs.Var(qpsValue{&o.Kube.QPS}, "kube-qps", "requests per second to the Kubernetes API server, sustained")
	fs.IntVar(&o.Kube.Burst, "kube-burst", o.Kube.Burst, "requests to the Kubernetes API server, in a burst")
	fs.StringVar(&o.CacheDir, "cache-dir", o.CacheDir, "directory for git clones")
	fs.StringVar(&o.Config.DefaultEnvironment, "environment", o.Config.DefaultEnvironment, "environment of repos that set none")
	fs.StringVar(&o.PublicURL, "public-url", "", "base URL of this deployd, used in links it hands out (e.g. https://deployd.example.com)")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "deployd's own namespace, where it keeps its state (default: its pod's, else deployd)")
	fs.StringVar(&o.APITokenFile, "api-token-file", "", "file holding the bearer token for the API's write endpoints (sync, pause, resume)")
	fs.BoolVar(&o.APIReadAuth, "api-read-auth", false, "require the API token on read endpoints too")
	fs.IntVar(&o.APIStreams.Max, "api-max-streams", o.APIStreams.Max, "event streams (GET /events, /deployment/OWNER/REPO/events) served at once; more are answered 503")
	fs.IntVar(&o.APIStreams.PerClient, "api-max-streams-per-client", o.APIStreams.PerClient, "event streams one client address may hold at once")
	fs.StringVar(&o.GitHub.TokenFile, "github-token-file", "", "file holding a GitHub token for reporting deployments (re-read when it changes)")
	fs.Int64Var(&o.GitHub.AppID, "github-app-id", 0, "GitHub App id, to report as an app installation instead of with a token")
	fs.StringVar(&o.GitHub.AppKeyFile, "github-app-key-file", "", "the GitHub App's private key (PEM)")
	fs.Int64Var(&o.GitHub.InstallationID, "github-app-installation-id", 0, "the GitHub App's installation id")
	fs.StringVar(&o.GitHub.APIURL, "github-api-url", "", "GitHub REST API base URL (GitHub Enterprise: https://HOST/api/v3/); default https://api.github.com/")
	fs.IntVar(&o.HistoryLimit, "history-limit", o.HistoryLimit, "deployment records kept per repo and environment")
	fs.StringVar(&o.WebhookSecretFile, "webhook-secret-file", "", "file holding the GitHub webhook secret (webhooks are refused without it)")
	fs.IntVar(&o.Webhook.MaxReadsPerClient, "webhook-reads-per-client", o.Webhook.MaxReadsPerClient, "webhook payloads one client address may send at once (of 8); behind a proxy, every delivery is the proxy's: raise it to 8")
	fs.IntVar(&o.Controller.Concurrency, "concurrency", o.Controller.Concurrency, "how many repos are checked or deployed at once")
	fs.DurationVar(&o.GitTimeout, "git-timeout", o.GitTimeout, "timeout of each git network operation")
	fs.IntVar(&o.GitMaxFetchMiB, "git-max-fetch-mib", o.GitMaxFetchMiB, "MiB one git fetch may bring, counted as received; a commit over it is refused (0: no limit)")
	fs.IntVar(&o.GitMaxObjectMiB, "git-max-object-mib", o.GitMaxObjectMiB, "MiB any one file (git object) in a fetch may have; a commit with a bigger one is refused (0: no limit)")
	fs.BoolVar(&o.LeaderElect, "leader-elect", false, "run as one of several replicas: only the leader (a Lease in --namespace) checks and deploys; the others serve reads and hand webhooks to it")
	fs.DurationVar(&o.LeaderElection.LeaseDuration, "leader-elect-lease-duration", o.LeaderElection.LeaseDuration, "how long a follower waits for a leader that stopped renewing before it takes over")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", o.ShutdownTimeout, "how long in-flight work may take after SIGTERM")
	fs.StringVar(&f.logFormat, "log-format", f.logFormat, "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", f.logLevel, "log level: debug, info, warn or error")
	fs.BoolVar(&f.showVersion, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: deployd [flags]\n       deployd check --config repos.yaml\n       deployd render [--dir deploy/manifests] [--environment E] [--values F]... [--set K=V]...\n       deployd version\n"+
			"       deployd status|sync|pause|resume|rollback|wait OWNER/REPO [--server URL] [--token-file F] [--environment E] ...\n"+
			"       deployd diff OWNER/REPO [--ref REF | --dir LOCAL_DIR] [--environment E]\n"+
			"       deployd promote OWNER/REPO --to ENVIRONMENT [--commit SHA] [--wait]\n\n"+
			"Every flag can also be set as DEPLOYD_<FLAG> (e.g. DEPLOYD_LOG_LEVEL=debug); flags win.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs, f
}

// RouteClientGoLogs sends client-go's own messages (leader election, watch errors) to
// deployd's log, in its format. Only a process's main sets it, before Main: klog's logger
// may not be swapped while client-go runs, as it does in tests running several daemons.
var RouteClientGoLogs bool

// serve runs the daemon; listening, when set, receives the bound address (tests).
func serve(ctx context.Context, args []string, stdout, stderr io.Writer, hook func(o *daemon.Options)) error {
	fs, f := newServeFlags(stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	if f.showVersion {
		fmt.Fprintln(stdout, version.String())
		return nil
	}
	log, err := newLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	if err := f.validate(); err != nil {
		return err
	}
	f.opts.Logger = log
	if hook != nil {
		hook(&f.opts)
	}
	pace := gcpace.DefaultOptions()
	gogcSet, gogc := gcpace.FromEnv(pace)
	log.Info("starting", "version", version.String(), "gogc", gogc)
	if !gogcSet {
		paceCtx, stopPace := context.WithCancel(ctx)
		defer stopPace()
		go gcpace.Run(paceCtx, pace)
	}
	err = daemon.Run(ctx, f.opts)
	var cfgErr *config.Error
	if errors.As(err, &cfgErr) {
		fmt.Fprintf(stderr, "deployd: %s is not valid:\n%s\nRun `deployd check --config %s` after fixing it.\n", f.opts.ConfigPath, indent(cfgErr.Error()), f.opts.ConfigPath)
		return &ExitError{Code: 1}
	}
	return err
}

func (f *serveFlags) validate() error {
	if msg := config.CheckEnvironment(f.opts.Config.DefaultEnvironment); msg != "" {
		return fmt.Errorf("--environment: %s", msg)
	}
	if f.opts.PublicURL != "" {
		u, err := url.Parse(f.opts.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--public-url %q: give an absolute http(s) URL, e.g. https://deployd.example.com", f.opts.PublicURL)
		}
		f.opts.PublicURL = strings.TrimSuffix(f.opts.PublicURL, "/")
	}
	if f.opts.ShutdownTimeout <= 0 {
		return fmt.Errorf("--shutdown-timeout must be more than 0")
	}
	if msg := config.CheckNamespace(f.opts.Namespace); msg != "" {
		return fmt.Errorf("--namespace: %s", msg)
	}
	if f.opts.GitTimeout <= 0 {
		return fmt.Errorf("--git-timeout must be more than 0")
	}
	if f.opts.GitMaxFetchMiB < 0 || f.opts.GitMaxObjectMiB < 0 {
		return fmt.Errorf("--git-max-fetch-mib and --git-max-object-mib must be 0 (no limit) or more")
	}
	if f.opts.HistoryLimit < 1 {
		return fmt.Errorf("--history-limit must be 1 or more")
	}
	if f.opts.Webhook.MaxReadsPerClient < 1 {
		return fmt.Errorf("--webhook-reads-per-client must be 1 or more")
	}
	if f.opts.APIStreams.Max < 1 || f.opts.APIStreams.PerClient < 1 {
		return fmt.Errorf("--api-max-streams and --api-max-streams-per-client must be 1 or more")
	}
	if f.opts.Controller.Concurrency < 1 {
		return fmt.Errorf("--concurrency must be 1 or more")
	}
	if d := f.opts.LeaderElection.LeaseDuration; d < 3*time.Second {
		return fmt.Errorf("--leader-elect-lease-duration must be 3s or more (renewals every %s would not keep it)", d/7)
	}
	// client-go's proportions: a 15 s lease renewed within 10 s, tried every 2 s.
	f.opts.LeaderElection.RenewDeadline = f.opts.LeaderElection.LeaseDuration * 2 / 3
	f.opts.LeaderElection.RetryPeriod = f.opts.LeaderElection.LeaseDuration * 2 / 15
	return nil
}

// parse reads args, then fills each flag not given from DEPLOYD_<FLAG>.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &ExitError{Code: 0}
		}
		return &ExitError{Code: 2}
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see deployd --help)", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	sort.Strings(names)
	for _, name := range names {
		env := EnvName(name)
		val, ok := os.LookupEnv(env)
		if given[name] || !ok {
			continue
		}
		if err := fs.Set(name, val); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %v", env, val, err))
		}
	}
	return errors.Join(errs...)
}

// EnvName is the environment variable that sets a flag: --log-level is DEPLOYD_LOG_LEVEL.
func EnvName(flag string) string {
	return "DEPLOYD_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	hopts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// Main runs deployd as a program: SIGINT and SIGTERM start a graceful shutdown, and
// the result is the exit code (0 after a clean shutdown).
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := Run(ctx, args, stdout, stderr)
	var exit *ExitError
	switch {
	case errors.As(err, &exit):
		return exit.Code
	case err != nil:
		fmt.Fprintln(stderr, "deployd:", err)
		return 1
	}
	return 0
}

// qpsValue is a float32 flag (client-go's QPS type).
type qpsValue struct{ p *float32 }

func (v qpsValue) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.FormatFloat(float64(*v.p), 'g', -1, 32)
}

func (v qpsValue) Set(s string) error {
	f, err := strconv.ParseFloat(s, 32)
	if err != nil || f <= 0 {
		return fmt.Errorf("want a positive number, e.g. 200")
	}
	*v.p = float32(f)
	return nil
}
