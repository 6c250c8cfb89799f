// Command bench measures deployd end to end (make bench) on a simulated cluster, a local
// smart-HTTP git server and the GitHub stand-in, running the deployd binary as a user
// would:
//
//  1. push → applied, against the bare work by hand (git fetch + kubectl apply --server-side);
//  2. rollout finished → reported (deployd's API and GitHub);
//  3. idle cost of 1,000 polled repos (RSS, CPU, git and API-server requests);
//  4. 50 rollouts at once against one alone;
//  5. cold start with 1,000 repos of 10 objects;
//  6. the status API under load (wrk, in its own process), and the handler's Go benchmark;
//  7. 50 webhook deliveries a second for 60 s across 200 repos, while clients read the
//     status API: none lost, no error answers, memory flat;
//  8. 200 repos pushed while 5 repos push hostile inputs (issue 17) and 50 clients hold
//     event streams: every calm repo deploys, deployd never restarts, each hostile repo
//     gets an error record, RSS stays under the pod's limit;
//  9. on the real node (root, Linux): start, kubectl apply -f k8s/ → deployd Ready, push →
//     the app's real Pods serve the new version, deployd's Pod memory at rest;
//  10. a hand edit of an applied object until deployd's drift correction puts it back;
//  11. side by side with Flux (source-controller + kustomize-controller built from their
//     modules, hack/flux/build.sh): push → applied, last pod Ready → reported, many apps at
//     once, cold start and idle cost, as ratios deployd ÷ Flux (fluxbench.go);
//  12. a pull request's webhook until deployd serves its preview (fetch, render, dry run, diff).
//
// -quick runs every scenario tiny (a few minutes) to catch a broken harness; it asserts no
// timing and writes to bin/bench-quick unless -out says otherwise.
//
// It writes bench/results/<date>.json and the table in bench/RESULTS.md, and prints it.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/deployd/deployd/internal/realnode"
	"github.com/deployd/deployd/pkg/client"
)

type options struct {
	deployd  string
	out      string
	runs     int
	repos    int
	many     int
	idle     time.Duration
	load     time.Duration
	only     string
	profile  string
	logLevel string
	keep     bool
	pin      bool
	args     string
	readme   string
	// hooksRepos, hooksRate and hooksFor shape scenario 7: repos, deliveries per second, how long.
	hooksRepos int
	hooksRate  int
	hooksFor   time.Duration
	// hooksReads is the status API reads per second during scenario 7 (0: unpaced).
	hooksReads int
	// hostileRepos is how many calm repos deploy beside the hostile ones in scenario 8.
	hostileRepos int
	// quick shrinks every scenario (see quickDefaults).
	quick bool
	flux  fluxOptions
}

func main() {
	var o options
	flag.StringVar(&o.deployd, "deployd", "bin/deployd", "the deployd binary to measure")
	flag.StringVar(&o.out, "out", "bench", "where results/<date>.json and RESULTS.md go")
	flag.IntVar(&o.runs, "runs", 20, "timed runs of scenarios 1 and 2 (after one warm-up)")
	flag.IntVar(&o.repos, "repos", 1000, "repos of scenarios 3, 5 and 6")
	flag.IntVar(&o.many, "many", 50, "repos configured at once in scenario 4")
	flag.DurationVar(&o.idle, "idle", 3*time.Minute, "how long scenario 3 watches idle deployd")
	flag.DurationVar(&o.load, "load", 20*time.Second, "how long scenario 6 loads the status API")
	flag.IntVar(&o.hooksRepos, "hooks-repos", 200, "webhook-only repos of scenario 7")
	flag.IntVar(&o.hooksRate, "hooks-rate", 50, "webhook deliveries per second in scenario 7")
	flag.DurationVar(&o.hooksFor, "hooks-for", 60*time.Second, "how long scenario 7 delivers webhooks")
	flag.IntVar(&o.hooksReads, "hooks-reads", 200, "status API reads per second during scenario 7, over 4 clients (0: as fast as they go)")
	flag.IntVar(&o.hostileRepos, "hostile-repos", 200, "calm repos deploying beside the hostile ones in scenario 8")
	flag.StringVar(&o.only, "only", "1,2,3,4,5,6,7,8,9,10,11,12", "scenarios to run, e.g. 1,2 (9 needs root on Linux: the real node)")
	flag.BoolVar(&o.quick, "quick", false, "run each scenario tiny (a few minutes) to check the harness; flags given still count")
	flag.IntVar(&o.flux.runs, "flux-runs", 20, "scenario 11: timed runs of push → applied and ready → reported, each tool")
	flag.IntVar(&o.flux.many, "flux-many", 50, "scenario 11: apps configured at once")
	flag.IntVar(&o.flux.manyHigh, "flux-many-concurrent", 20, "scenario 11: Flux's --concurrent in the second many-at-once run")
	flag.IntVar(&o.flux.cold, "flux-cold", 200, "scenario 11: apps at the cold start")
	flag.IntVar(&o.flux.idleRepos, "flux-idle-repos", 1000, "scenario 11: idle apps")
	flag.DurationVar(&o.flux.idle, "flux-idle", 2*time.Minute, "scenario 11: how long each tool's idle cost is watched")
	flag.IntVar(&o.flux.idleHigh, "flux-idle-concurrent", 20, "scenario 11: Flux's --concurrent while its idle apps are first deployed")
	flag.DurationVar(&o.flux.interval, "flux-interval", time.Minute, "scenario 11: both tools' poll interval")
	flag.StringVar(&o.flux.parts, "flux-parts", "push,ready,many,cold,idle", "scenario 11: which parts run")
	flag.StringVar(&o.profile, "profile", "", "directory for pprof profiles of the cold start, idle heap and status load, and execution traces of the status load")
	flag.StringVar(&o.logLevel, "log-level", "warn", "deployd's log level")
	flag.StringVar(&o.args, "deployd-args", "", "more flags for deployd, space-separated (e.g. \"--concurrency 8\")")
	flag.StringVar(&o.readme, "readme", "README.md", "a Markdown file whose bench markers get the table too (empty: none)")
	flag.BoolVar(&o.pin, "pin", true, "in scenario 6, pin deployd to CPU 0, and wrk, the cluster, the git server and the harness to the other CPUs (taskset; on 2 cores or more)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (deployd's logs, repos) and say where")
	flag.Parse()
	if o.quick {
		quickDefaults(&o)
	}
	o.flux.deploydArgs = o.args
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run1(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run1(ctx context.Context, o options) error {
	if _, err := os.Stat(o.deployd); err != nil {
		return fmt.Errorf("%s: %w (make bench builds it)", o.deployd, err)
	}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
	}
	want := map[int]bool{}
	for _, s := range strings.Split(o.only, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 12 {
			return fmt.Errorf("-only %q: want scenario numbers from 1 to 12", o.only)
		}
		want[n] = true
	}
	if o.hooksRepos < 1 || o.hooksRate < 1 || o.hooksFor <= 0 || o.hooksReads < 0 {
		return fmt.Errorf("-hooks-repos, -hooks-rate and -hooks-for must be positive, -hooks-reads not negative")
	}
	began := time.Now()
	r := &results{Date: time.Now().UTC(), Machine: machineInfo(), Commit: describe()}
	if want[9] {
		// First, alone: the simulated scenarios' cluster and load would skew its timings.
		if err := realnode.Available(); err != nil {
			progress("scenario 9 left out: %v", err)
		} else if err := realNode(ctx, o, r); err != nil {
			r.fail("scenario 9", err)
		}
	}
	e := &env{}
	if want[1] || want[2] || want[3] || want[4] || want[5] || want[6] || want[7] || want[8] || want[10] || want[11] || want[12] {
		var err error
		if e, err = newEnv(ctx, o); err != nil {
			return err
		}
		defer e.close()
	}
	if want[1] || want[2] || want[4] {
		if err := e.smallScenarios(ctx, want, r); err != nil {
			r.fail("scenarios 1, 2, 4", err)
		}
	}
	if want[3] || want[5] || want[6] {
		if err := e.scaleScenarios(ctx, want, r); err != nil {
			r.fail("scenarios 3, 5, 6", err)
		}
	}
	if want[6] {
		if err := handlerBenchmark(ctx, o.quick, r); err != nil {
			r.fail("handler benchmark", err)
		}
	}
	if want[7] {
		if err := e.webhookLoad(ctx, r); err != nil {
			r.fail("scenario 7", err)
		}
	}
	if want[8] {
		if o.hostileRepos < 1 {
			r.fail("scenario 8", errors.New("-hostile-repos must be positive"))
		} else if err := e.hostileLoad(ctx, r); err != nil {
			r.fail("scenario 8", err)
		}
	}
	if want[10] {
		if err := e.driftCorrected(ctx, r); err != nil {
			r.fail("scenario 10", err)
		}
	}
	if want[12] {
		if err := e.previewReady(ctx, r); err != nil {
			r.fail("scenario 12", err)
		}
	}
	if want[11] {
		if err := e.fluxSideBySide(ctx, r); err != nil {
			r.fail("scenario 11", err)
		}
	}
	if err := r.write(o.out, o.readme); err != nil {
		return err
	}
	fmt.Println(r.markdown() + r.fluxMarkdown())
	progress("done in %s", time.Since(began).Round(time.Second))
	if len(r.Failures) > 0 {
		return errors.New("some scenarios did not finish (see above)")
	}
	return nil
}

// smallScenarios run against one deployd: 4 (many at once), 1 (push) and 2 (rollout).
func (e *env) smallScenarios(ctx context.Context, want map[int]bool, r *results) error {
	push := e.git.NewRepo(e.tb, "bench/push")
	push.Commit("main", "first", app(appOptions{value: "first", replicas: 1}))
	roll := e.git.NewRepo(e.tb, "bench/rollout")
	roll.Commit("main", "first", app(appOptions{value: "rollout", replicas: 2, run: "first", recreate: true}))
	small := e.git.NewRepo(e.tb, "bench/small-template")
	// Pods Ready 5 s after they start, as with a readiness probe: one repo's rollout takes
	// time, as on a real cluster, and that time is what many repos must share.
	small.Commit("main", "first", app(appOptions{value: "small", replicas: 1, small: true, readyAfter: "5s"}))
	base := []repoEntry{
		{Name: "bench/push", URL: e.git.RepoURL("bench/push"), Namespace: "bench-push"},
		{Name: "bench/rollout", URL: e.git.RepoURL("bench/rollout"), Namespace: "bench-rollout"},
	}
	d, err := e.startDeployd("small", base)
	if err != nil {
		return err
	}
	defer d.stop()
	if _, err := waitReady(ctx, d); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	_, err = d.waitFor(wctx, 50*time.Millisecond, func(s map[string]client.Summary) bool {
		return s["bench/push"].Phase == "succeeded" && s["bench/rollout"].Phase == "succeeded"
	})
	cancel()
	if err != nil {
		return fmt.Errorf("first deployment of the push and rollout repos (log: %s): %w", d.log, err)
	}
	if want[4] {
		if _, err := e.manyAtOnce(ctx, d, base, small, e.opts.many, r); err != nil {
			r.fail("scenario 4", err)
		}
	}
	if want[1] {
		if err := e.pushApplied(ctx, d, push, r); err != nil {
			r.fail("scenario 1", err)
		}
	}
	if want[2] {
		if err := e.rolloutReported(ctx, d, roll, r); err != nil {
			r.fail("scenario 2", err)
		}
	}
	return nil
}

// scaleScenarios run against a second deployd with the many repos: 5, then 3, then 6.
func (e *env) scaleScenarios(ctx context.Context, want map[int]bool, r *results) error {
	tmpl := e.git.NewRepo(e.tb, "bench/idle-template")
	tmpl.Commit("main", "first", app(appOptions{value: "idle", replicas: 1}))
	progress("serving %d app repos", e.opts.repos)
	repos, err := e.copyRepos(tmpl, "bench/idle", e.opts.repos)
	if err != nil {
		return err
	}
	for i := range repos {
		repos[i].Interval = time.Minute
	}
	d, err := e.coldStart(ctx, repos, r)
	if d != nil {
		defer d.stop()
	}
	if err != nil {
		return err
	}
	if want[3] {
		// Idle means reports done too: wait for GitHub to have every success.
		sha := tmpl.Head()
		gctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		for _, repo := range repos {
			if _, err := e.waitGitHub(gctx, repo.Name, sha); err != nil {
				cancel()
				return err
			}
		}
		cancel()
		if err := e.idleCost(ctx, d, len(repos), r); err != nil {
			r.fail("scenario 3", err)
		}
	}
	if want[6] {
		if err := e.statusLoad(ctx, d, "bench/idle", len(repos), r); err != nil {
			r.fail("scenario 6", err)
		}
	}
	return nil
}

// handlerBenchmark runs the status endpoint's Go benchmarks, the handler behind net/http
// and the fast path that answers plain clients, and adds their medians.
func handlerBenchmark(ctx context.Context, quick bool, r *results) error {
	progress("running BenchmarkGetDeployment and BenchmarkFastPath (internal/api)")
	args := []string{"test", "-run", "^$", "-bench", "^Benchmark(GetDeployment|FastPath)$", "-benchmem", "-count", "5", "./internal/api"}
	if quick {
		args = append(args, "-benchtime", "100x")
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go test -bench: %w\n%s", err, out)
	}
	for _, b := range []struct{ name, what, detail string }{
		{"BenchmarkGetDeployment", "handler", ""},
		{"BenchmarkFastPath", "fast path", "a plain client's request read, answered from the cache and written; "},
	} {
		var ns, bytesOp, allocs []time.Duration // durations as plain numbers, for median()
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 8 || !strings.HasPrefix(f[0], b.name+"-") {
				continue
			}
			n, _ := strconv.ParseFloat(f[2], 64)
			by, _ := strconv.ParseFloat(f[4], 64)
			a, _ := strconv.ParseFloat(f[6], 64)
			ns, bytesOp, allocs = append(ns, time.Duration(n)), append(bytesOp, time.Duration(by)), append(allocs, time.Duration(a))
		}
		if len(ns) == 0 {
			return fmt.Errorf("no %s lines in:\n%s", b.name, out)
		}
		s := series(ns)
		r.add(6, b.what+" alone ("+b.detail+"Go benchmark, 1,000 repos × 10 objects)", figure{Value: s.Value * 1000, Median: s.Median * 1000, Min: s.Min * 1000, Max: s.Max * 1000, N: s.N, Unit: "µs/op"}, "", nil)
		r.add(6, b.what+" allocations", value(float64(median(allocs)), "allocs/op"), "", nil)
		r.add(6, b.what+" bytes allocated", value(float64(median(bytesOp)), "B/op"), "", nil)
	}
	return nil
}

func describe() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
