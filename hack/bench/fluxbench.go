package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/pkg/client"
)

// fluxOptions shape scenario 11, deployd and Flux side by side.
type fluxOptions struct {
	runs        int           // timed runs of push → applied and ready → reported, each tool
	many        int           // apps configured at once
	manyHigh    int           // Flux's --concurrent for the second many-at-once run
	cold        int           // apps at a cold start
	idleRepos   int           // idle apps
	idle        time.Duration // how long the idle cost is watched
	idleHigh    int           // --concurrent Flux's idle apps are first deployed with (then restarted at its defaults)
	interval    time.Duration // both tools' poll interval
	deploydArgs string
	parts       string // which parts run: push,ready,many,cold,idle
}

// part says whether -flux-parts names p.
func (o fluxOptions) part(p string) bool {
	for _, q := range strings.Split(o.parts, ",") {
		if strings.TrimSpace(q) == p {
			return true
		}
	}
	return false
}

// sideApps is a pair of apps, one per tool, on copies of the same repo.
type sideApps struct {
	d, f         repoEntry // the deployd's and the Flux app's repo, namespace
	dRepo, fRepo *gittest.Repo
}

// fluxName is the Flux objects' name for an app: its namespace.
func fluxName(entry repoEntry) string { return entry.Namespace }

func (e *env) fluxApps(entries []repoEntry, interval time.Duration) []fluxApp {
	out := make([]fluxApp, len(entries))
	for i, entry := range entries {
		out[i] = fluxApp{name: fluxName(entry), url: entry.URL, namespace: entry.Namespace, interval: interval}
	}
	return out
}

func names(entries []repoEntry) []string {
	out := make([]string, len(entries))
	for i, entry := range entries {
		out[i] = fluxName(entry)
	}
	return out
}

// fluxSideBySide is scenario 11: deployd and Flux on one cluster, one git server, each on
// its own copy of the same apps in its own namespaces, each triggered its fastest
// documented way (deployd: the push webhook; Flux: the reconcile request its Receiver
// makes), runs interleaved where they can be.
func (e *env) fluxSideBySide(ctx context.Context, r *results) error {
	o := e.opts.flux
	r.fluxSettings(o)
	f, err := e.newFluxPeer(ctx)
	if err != nil {
		return err
	}
	defer f.stop()

	// The push and rollout apps, one copy per tool.
	mk := func(name string, files map[string]string) (*gittest.Repo, repoEntry) {
		repo := e.git.NewRepo(e.tb, "bench/"+name)
		repo.Commit("main", "first", files)
		return repo, repoEntry{Name: "bench/" + name, URL: e.git.RepoURL("bench/" + name), Namespace: name, Interval: o.interval}
	}
	var push, roll sideApps
	push.dRepo, push.d = mk("d-push", app(appOptions{value: "first", replicas: 1}))
	push.fRepo, push.f = mk("f-push", app(appOptions{value: "first", replicas: 1}))
	rollApp := app(appOptions{value: "rollout", replicas: 2, run: "first", recreate: true})
	roll.dRepo, roll.d = mk("d-rollout", rollApp)
	roll.fRepo, roll.f = mk("f-rollout", rollApp)
	base := []repoEntry{push.d, roll.d}
	for _, entry := range []repoEntry{push.d, roll.d, push.f, roll.f} {
		if err := e.ensureNamespace(ctx, entry.Namespace); err != nil {
			return err
		}
	}
	d, err := e.startDeployd("flux-side", base, strings.Fields(o.deploydArgs)...)
	if err != nil {
		return err
	}
	defer func() { d.stop() }()
	if _, err := waitReady(ctx, d); err != nil {
		return err
	}
	if err := f.start(ctx, 0); err != nil {
		return err
	}
	fApps := e.fluxApps([]repoEntry{push.f, roll.f}, o.interval)
	if err := f.createAll(ctx, fApps); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	_, err = d.waitFor(wctx, 50*time.Millisecond, func(s map[string]client.Summary) bool {
		return deployedAt(push.d.Name, push.dRepo.Head())(s) && deployedAt(roll.d.Name, roll.dRepo.Head())(s)
	})
	cancel()
	if err != nil {
		return fmt.Errorf("deployd's first deployment of the push and rollout apps: %w", err)
	}
	for _, a := range []sideApps{push, roll} {
		if err := f.waitReadyAt(ctx, []string{fluxName(a.f)}, a.fRepo.Head(), 3*time.Minute); err != nil {
			return fmt.Errorf("first deployment of %s by Flux: %w", a.f.Name, err)
		}
	}
	progress("flux: both tools deployed the push and rollout apps")
	if o.part("push") {
		if err := e.fluxPush(ctx, d, f, push, r); err != nil {
			r.fail("scenario 11 (push → applied)", err)
		}
	}
	if o.part("ready") {
		if err := e.fluxRollout(ctx, d, f, roll, r); err != nil {
			r.fail("scenario 11 (ready → reported)", err)
		}
	}
	if o.part("many") {
		if err := e.fluxMany(ctx, d, f, base, r); err != nil {
			r.fail("scenario 11 (many at once)", err)
		}
	}
	d.stop()
	if err := f.reset(ctx); err != nil {
		return err
	}
	if err := e.deleteNamespaces(ctx, "bench-d-many-"); err != nil {
		return err
	}
	if o.part("cold") {
		if err := e.fluxCold(ctx, f, r); err != nil {
			r.fail("scenario 11 (cold start)", err)
		}
	}
	if o.part("idle") {
		if err := e.fluxIdle(ctx, f, r); err != nil {
			r.fail("scenario 11 (idle)", err)
		}
	}
	return nil
}

// reset deletes every Flux app (with the controllers running, so their finalizers prune
// what they applied) and stops the controllers.
func (f *fluxPeer) reset(ctx context.Context) error {
	if f.alive() != nil {
		f.stop()
		if err := f.start(ctx, 0); err != nil {
			return err
		}
	}
	if err := f.deleteAll(ctx); err != nil {
		return err
	}
	f.stop()
	return nil
}

// waitReadyAt waits until names are Ready at sha.
func (f *fluxPeer) waitReadyAt(ctx context.Context, names []string, sha string, timeout time.Duration) error {
	done, err := f.watchReady(ctx, names, sha)
	if err != nil {
		return err
	}
	if _, err := done(timeout); err != nil {
		return fmt.Errorf("%w: %s", err, f.notReady(ctx, names, sha))
	}
	return nil
}

// fluxPush is push → objects applied: a commit changing one ConfigMap of the 10-object app,
// the trigger, and the new value seen through the API server; then each tool's own report
// of success is awaited before the next run. Runs alternate which tool goes first.
func (e *env) fluxPush(ctx context.Context, d *daemon, f *fluxPeer, a sideApps, r *results) error {
	var dt, ft []time.Duration
	deploydRun := func(value string) (time.Duration, error) {
		sha := a.dRepo.Commit("main", "bench: "+value, app(appOptions{value: value, replicas: 1}))
		seen, err := e.watchValue(ctx, a.d.Namespace, value)
		if err != nil {
			return 0, err
		}
		start := time.Now()
		if err := e.push(ctx, d, a.d.Name, sha); err != nil {
			return 0, err
		}
		at, err := seen(30 * time.Second)
		if err != nil {
			return 0, fmt.Errorf("deployd: %w", err)
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if _, err := d.waitFor(wctx, 20*time.Millisecond, deployedAt(a.d.Name, sha)); err != nil {
			return 0, fmt.Errorf("waiting for deployd to finish: %w", err)
		}
		return at.Sub(start), nil
	}
	fluxRun := func(value string) (time.Duration, error) {
		sha := a.fRepo.Commit("main", "bench: "+value, app(appOptions{value: value, replicas: 1}))
		seen, err := e.watchValue(ctx, a.f.Namespace, value)
		if err != nil {
			return 0, err
		}
		done, err := f.watchReady(ctx, []string{fluxName(a.f)}, sha)
		if err != nil {
			return 0, err
		}
		start := time.Now()
		if err := f.requestReconcile(ctx, fluxName(a.f)); err != nil {
			return 0, err
		}
		at, err := seen(time.Minute)
		if err != nil {
			return 0, fmt.Errorf("flux: %w: %s", err, f.notReady(ctx, []string{fluxName(a.f)}, sha))
		}
		if _, err := done(2 * time.Minute); err != nil {
			return 0, fmt.Errorf("waiting for Flux to finish: %w: %s", err, f.notReady(ctx, []string{fluxName(a.f)}, sha))
		}
		return at.Sub(start), nil
	}
	for i := 0; i <= e.opts.flux.runs; i++ { // run 0 warms both up
		value := fmt.Sprintf("run-%d-%d", i, time.Now().UnixNano())
		var dd, fd time.Duration
		var err error
		if i%2 == 0 {
			if dd, err = deploydRun(value); err == nil {
				fd, err = fluxRun(value)
			}
		} else {
			if fd, err = fluxRun(value); err == nil {
				dd, err = deploydRun(value)
			}
		}
		if err != nil {
			return fmt.Errorf("push %d: %w", i, err)
		}
		if i > 0 {
			dt, ft = append(dt, dd), append(ft, fd)
		}
		progress("flux: push → applied %d/%d: deployd %s, Flux %s", i, e.opts.flux.runs, ms(dd), ms(fd))
	}
	r.compare("push → objects applied, median", series(dt), series(ft), 0.25)
	r.compare("push → objects applied, p99", single(percentile(dt, 99)), single(percentile(ft, 99)), 0)
	return nil
}

// fluxRollout is last pod Ready → the tool reports success: a commit rolling out 2 pods
// (Recreate), and from the moment the last new pod is Ready to deployd's API (event stream)
// and GitHub status, and to Flux's Kustomization Ready at the commit (wait: true).
func (e *env) fluxRollout(ctx context.Context, d *daemon, f *fluxPeer, a sideApps, r *results) error {
	const replicas = 2
	var toAPI, toGitHub, toFlux []time.Duration
	deploydRun := func(runID string) (api, gh time.Duration, err error) {
		sha := a.dRepo.Commit("main", "bench: roll out "+runID, app(appOptions{value: "rollout", replicas: replicas, run: runID, recreate: true}))
		ready, err := e.watchPodsReady(ctx, a.d.Namespace, runID, replicas)
		if err != nil {
			return 0, 0, err
		}
		sctx, stop := context.WithCancel(ctx)
		defer stop()
		events, err := d.follow(sctx, a.d.Name)
		if err != nil {
			return 0, 0, err
		}
		if err := e.push(ctx, d, a.d.Name, sha); err != nil {
			return 0, 0, err
		}
		readyAt, err := ready(time.Minute)
		if err != nil {
			return 0, 0, fmt.Errorf("deployd's pods: %w", err)
		}
		apiAt, err := succeeded(events, sha, time.Minute)
		if err != nil {
			return 0, 0, fmt.Errorf("deployd API: %w", err)
		}
		gctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		ghAt, err := e.waitGitHub(gctx, a.d.Name, sha)
		if err != nil {
			return 0, 0, err
		}
		return apiAt.Sub(readyAt), ghAt.Sub(readyAt), nil
	}
	fluxRun := func(runID string) (time.Duration, error) {
		sha := a.fRepo.Commit("main", "bench: roll out "+runID, app(appOptions{value: "rollout", replicas: replicas, run: runID, recreate: true}))
		ready, err := e.watchPodsReady(ctx, a.f.Namespace, runID, replicas)
		if err != nil {
			return 0, err
		}
		done, err := f.watchReady(ctx, []string{fluxName(a.f)}, sha)
		if err != nil {
			return 0, err
		}
		if err := f.requestReconcile(ctx, fluxName(a.f)); err != nil {
			return 0, err
		}
		readyAt, err := ready(time.Minute)
		if err != nil {
			return 0, fmt.Errorf("pods of the Flux app: %w", err)
		}
		at, err := done(2 * time.Minute)
		if err != nil {
			return 0, fmt.Errorf("flux: %w: %s", err, f.notReady(ctx, []string{fluxName(a.f)}, sha))
		}
		return at.Sub(readyAt), nil
	}
	for i := 0; i <= e.opts.flux.runs; i++ {
		runID := fmt.Sprintf("r%d-%d", i, time.Now().UnixNano())
		var api, gh, fl time.Duration
		var err error
		if i%2 == 0 {
			if api, gh, err = deploydRun(runID); err == nil {
				fl, err = fluxRun(runID)
			}
		} else {
			if fl, err = fluxRun(runID); err == nil {
				api, gh, err = deploydRun(runID)
			}
		}
		if err != nil {
			return fmt.Errorf("rollout %d: %w", i, err)
		}
		if i > 0 {
			toAPI, toGitHub, toFlux = append(toAPI, api), append(toGitHub, gh), append(toFlux, fl)
		}
		progress("flux: last pod Ready → reported %d/%d: deployd API %s, GitHub %s; Flux %s", i, e.opts.flux.runs, ms(api), ms(gh), ms(fl))
	}
	r.compare("last pod Ready → success reported (deployd API; Flux Ready), median", series(toAPI), series(toFlux), 0.01)
	r.compare("last pod Ready → success reported (deployd GitHub status; Flux Ready), median", series(toGitHub), series(toFlux), 0.01)
	return nil
}

// fluxMany is many apps at once: n apps of a Deployment (pods Ready 5 s after they start,
// as with a readiness probe) and a ConfigMap, configured at once, until each tool reports
// all of them successful: deployd (added to its repos.yaml), Flux at its default
// --concurrent and at manyHigh (GitRepositories and Kustomizations created at once).
func (e *env) fluxMany(ctx context.Context, d *daemon, f *fluxPeer, base []repoEntry, r *results) error {
	o := e.opts.flux
	tmpl := e.git.NewRepo(e.tb, "bench/side-small")
	tmpl.Commit("main", "first", app(appOptions{value: "small", replicas: 1, small: true, readyAfter: "5s"}))
	sha := tmpl.Head()
	copies := func(prefix string) ([]repoEntry, error) {
		entries, err := e.copyRepos(tmpl, prefix, o.many)
		if err != nil {
			return nil, err
		}
		for i := range entries {
			entries[i].Interval = o.interval
			if err := e.ensureNamespace(ctx, entries[i].Namespace); err != nil {
				return nil, err
			}
		}
		return entries, nil
	}
	// deployd.
	dMany, err := copies("bench/d-many")
	if err != nil {
		return err
	}
	start := time.Now()
	if err := writeConfig(d.config, append(append([]repoEntry{}, base...), dMany...)); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	apiAt, err := d.waitFor(wctx, 20*time.Millisecond, func(s map[string]client.Summary) bool {
		for _, repo := range dMany {
			if !deployedAt(repo.Name, sha)(s) {
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("deployd, %d apps: %w", o.many, err)
	}
	var ghAt time.Time
	for _, repo := range dMany {
		t, err := e.waitGitHub(wctx, repo.Name, sha)
		if err != nil {
			return err
		}
		ghAt = later(ghAt, t)
	}
	dAPI, dGH := apiAt.Sub(start), ghAt.Sub(start)
	progress("flux: %d apps at once: deployd reported all in %s (API), %s (GitHub)", o.many, ms(dAPI), ms(dGH))
	// Flux, at its defaults and then at manyHigh.
	fluxOnce := func(prefix string) (time.Duration, error) {
		entries, err := copies(prefix)
		if err != nil {
			return 0, err
		}
		done, err := f.watchReady(ctx, names(entries), sha)
		if err != nil {
			return 0, err
		}
		start := time.Now()
		if err := f.createAll(ctx, e.fluxApps(entries, o.interval)); err != nil {
			return 0, err
		}
		at, err := done(10 * time.Minute)
		if err != nil {
			return 0, fmt.Errorf("flux, %d apps: %w: %s", len(entries), err, f.notReady(ctx, names(entries), sha))
		}
		return at.Sub(start), nil
	}
	fDefault, err := fluxOnce("bench/f-many")
	if err != nil {
		return err
	}
	progress("flux: %d apps at once: Flux (--concurrent defaults) reported all in %s", o.many, ms(fDefault))
	r.compare(fmt.Sprintf("%d apps at once → all reported successful (deployd GitHub; Flux at its default --concurrent)", o.many), single(dGH), single(fDefault), 0.1)
	r.compare(fmt.Sprintf("%d apps at once → all reported successful (deployd API; Flux at its default --concurrent)", o.many), single(dAPI), single(fDefault), 0)
	if err := f.reset(ctx); err != nil {
		return err
	}
	if err := f.start(ctx, o.manyHigh); err != nil {
		return err
	}
	fHigh, err := fluxOnce("bench/f-many-c")
	if err != nil {
		return err
	}
	progress("flux: %d apps at once: Flux (--concurrent %d) reported all in %s", o.many, o.manyHigh, ms(fHigh))
	r.compare(fmt.Sprintf("%d apps at once → all reported successful (deployd GitHub; Flux at --concurrent %d)", o.many, o.manyHigh), single(dGH), single(fHigh), 0)
	return nil
}

// fluxCold is a cold start: each tool started with n apps of 10 objects configured and none
// deployed, until it reports all of them successful. Flux's GitRepositories and
// Kustomizations exist before its controllers start, as deployd's repos.yaml does.
func (e *env) fluxCold(ctx context.Context, f *fluxPeer, r *results) error {
	o := e.opts.flux
	tmpl := e.git.NewRepo(e.tb, "bench/side-cold")
	tmpl.Commit("main", "first", app(appOptions{value: "cold", replicas: 1}))
	sha := tmpl.Head()
	dApps, fApps, err := e.sideCopies(ctx, tmpl, "cold", o.cold)
	if err != nil {
		return err
	}
	d, dTook, err := e.deploydStarted(ctx, "flux-cold", dApps, sha)
	if d != nil {
		d.stop()
	}
	if err != nil {
		return err
	}
	progress("flux: cold start with %d apps: deployd reported all in %s", o.cold, dTook.Round(time.Millisecond))
	if err := e.deleteNamespaces(ctx, "bench-d-cold-"); err != nil {
		return err
	}
	fTook, err := f.startedWith(ctx, fApps, sha, 0)
	if err != nil {
		return err
	}
	progress("flux: cold start with %d apps: Flux reported all in %s", o.cold, fTook.Round(time.Millisecond))
	r.compare(fmt.Sprintf("cold start with %d apps of 10 objects → all reported successful (deployd GitHub; Flux Ready)", o.cold), single(dTook), single(fTook), 0)
	return f.reset(ctx)
}

// sideCopies serves n copies of tmpl per tool, with their namespaces made.
func (e *env) sideCopies(ctx context.Context, tmpl *gittest.Repo, kind string, n int) (dApps, fApps []repoEntry, err error) {
	progress("flux: serving %d %s apps per tool", n, kind)
	for _, p := range []struct {
		prefix string
		out    *[]repoEntry
	}{{"bench/d-" + kind, &dApps}, {"bench/f-" + kind, &fApps}} {
		entries, err := e.copyRepos(tmpl, p.prefix, n)
		if err != nil {
			return nil, nil, err
		}
		for i := range entries {
			entries[i].Interval = e.opts.flux.interval
			if err := e.ensureNamespace(ctx, entries[i].Namespace); err != nil {
				return nil, nil, err
			}
		}
		*p.out = entries
	}
	return dApps, fApps, nil
}

// deploydStarted starts deployd with apps and returns when GitHub had every app's success.
func (e *env) deploydStarted(ctx context.Context, name string, apps []repoEntry, sha string) (*daemon, time.Duration, error) {
	d, err := e.startDeployd(name, apps, strings.Fields(e.opts.flux.deploydArgs)...)
	if err != nil {
		return nil, 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	var last time.Time
	for _, a := range apps {
		t, err := e.waitGitHub(wctx, a.Name, sha)
		if err != nil {
			return d, 0, fmt.Errorf("%w\n%s", err, d.tail())
		}
		last = later(last, t)
	}
	return d, last.Sub(d.started), nil
}

// startedWith creates apps while the controllers are stopped, starts them with --concurrent
// n and returns how long from their start until every app was Ready at sha.
func (f *fluxPeer) startedWith(ctx context.Context, entries []repoEntry, sha string, n int) (time.Duration, error) {
	if err := f.createAll(ctx, f.e.fluxApps(entries, f.e.opts.flux.interval)); err != nil {
		return 0, err
	}
	done, err := f.watchReady(ctx, names(entries), sha)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := f.start(ctx, n); err != nil {
		return 0, err
	}
	at, err := done(30 * time.Minute)
	if err != nil {
		return 0, fmt.Errorf("flux, %d apps: %w: %s", len(entries), err, f.notReady(ctx, names(entries), sha))
	}
	return at.Sub(start), nil
}

// idleSample is what one idle watch saw: resident memory at its highest and CPU.
type idleSample struct {
	peak   memStatus
	median float64 // MB, total RSS
	cpuPct float64 // of one core, average
	for_   time.Duration
}

// watchIdle samples read (the memory and CPU so far of a tool's processes) every second
// for o.idle.
func (e *env) watchIdle(ctx context.Context, who string, read func() (float64, memStatus, error)) (idleSample, error) {
	cpu0, _, err := read()
	if err != nil {
		return idleSample{}, err
	}
	start := time.Now()
	var s idleSample
	var totals []float64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Since(start) < e.opts.flux.idle {
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case <-tick.C:
		}
		_, m, err := read()
		if err != nil {
			return s, err
		}
		totals = append(totals, m.rss())
		if m.rss() > s.peak.rss() {
			s.peak = m
		}
		if len(totals)%30 == 0 {
			progress("flux: idle %s: %s of %s, RSS %.0f MB (anon %.0f, file %.0f)", who, time.Since(start).Round(time.Second), e.opts.flux.idle, m.rss(), m.anon, m.file)
		}
	}
	cpu1, _, err := read()
	if err != nil {
		return s, err
	}
	s.for_ = time.Since(start)
	s.cpuPct = 100 * (cpu1 - cpu0) / s.for_.Seconds()
	sort.Float64s(totals)
	if len(totals) > 0 {
		s.median = totals[len(totals)/2]
	}
	return s, nil
}

// fluxIdle is the idle cost of n apps of 10 objects, deployed and unchanged, both tools
// polling at the same interval: deployd's RSS and CPU, then Flux's two controllers'
// together (Flux's apps deployed at --concurrent idleHigh to save time, then the
// controllers restarted at their defaults). Each tool is given one interval, at most the
// watch's length, to settle before its watch.
func (e *env) fluxIdle(ctx context.Context, f *fluxPeer, r *results) error {
	o := e.opts.flux
	// The simulated node holds 2,000 pods: what earlier scenarios left on it (in a full
	// run, scenario 5's 1,000 apps) goes first, or the last of 1,000 idle apps never start.
	if err := e.deleteNamespaces(ctx, "bench-"); err != nil {
		return err
	}
	tmpl := e.git.NewRepo(e.tb, "bench/side-idle")
	tmpl.Commit("main", "first", app(appOptions{value: "idle", replicas: 1}))
	sha := tmpl.Head()
	dApps, fApps, err := e.sideCopies(ctx, tmpl, "idle", o.idleRepos)
	if err != nil {
		return err
	}
	d, took, err := e.deploydStarted(ctx, "flux-idle", dApps, sha)
	if d != nil {
		defer d.stop()
	}
	if err != nil {
		return err
	}
	// Both tools get the same settle between their apps' deployment and the watch: idle
	// is what each holds once that burst is over, not the burst's tail.
	settle := min(o.interval, o.idle)
	progress("flux: idle: deployd deployed %d apps in %s; letting it settle for %s, then watching it for %s", o.idleRepos, took.Round(time.Second), settle, o.idle)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(settle):
	}
	dIdle, err := e.watchIdle(ctx, "deployd", func() (float64, memStatus, error) {
		cpu, err := cpuSeconds(d.cmd.Process.Pid)
		if err != nil {
			return 0, memStatus{}, err
		}
		m, err := readMemStatus(d.cmd.Process.Pid)
		return cpu, m, err
	})
	if err != nil {
		return err
	}
	d.stop()
	// The simulated node holds 2,000 pods: deployd's leave room for Flux's.
	if err := e.deleteNamespaces(ctx, "bench-d-idle-"); err != nil {
		return err
	}
	took, err = f.startedWith(ctx, fApps, sha, o.idleHigh)
	if err != nil {
		return err
	}
	progress("flux: idle: Flux deployed %d apps in %s at --concurrent %d; restarting it at its defaults", o.idleRepos, took.Round(time.Second), o.idleHigh)
	f.stop()
	if err := f.start(ctx, 0); err != nil {
		return err
	}
	progress("flux: idle: letting Flux settle for %s, then watching it for %s", settle, o.idle)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(settle):
	}
	if err := f.alive(); err != nil {
		return err
	}
	fIdle, err := e.watchIdle(ctx, "Flux", f.usage)
	if err != nil {
		return err
	}
	n := o.idleRepos
	r.compare(fmt.Sprintf("%d idle apps, polled every %s: peak RSS (Flux: both controllers)", n, o.interval),
		value(dIdle.peak.rss(), "MB"), value(fIdle.peak.rss(), "MB"), 0.4)
	r.compare("… of it anonymous (RssAnon: heap, stacks)", value(dIdle.peak.anon, "MB"), value(fIdle.peak.anon, "MB"), 0)
	r.compare("… of it file-backed (RssFile: the binaries' pages, reclaimable)", value(dIdle.peak.file, "MB"), value(fIdle.peak.file, "MB"), 0)
	r.compare("… median RSS over the watch", value(dIdle.median, "MB"), value(fIdle.median, "MB"), 0)
	r.compare(fmt.Sprintf("%d idle apps: CPU, average of one core over %s", n, o.idle), value(dIdle.cpuPct, "%"), value(fIdle.cpuPct, "%"), 0)
	return nil
}

// deleteNamespaces deletes the namespaces named prefix… (a tool's apps it no longer runs)
// and waits until their pods are gone: the simulated node holds 2,000 pods, and a tool's
// leftovers would otherwise load the cluster while the other is measured.
func (e *env) deleteNamespaces(ctx context.Context, prefix string) error {
	list, err := e.kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	gone := map[string]bool{}
	for _, ns := range list.Items {
		if strings.HasPrefix(ns.Name, prefix) {
			if err := e.kube.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return err
			}
			gone[ns.Name] = true
		}
	}
	progress("flux: deleting %d namespaces %s…", len(gone), prefix)
	deadline := time.Now().Add(5 * time.Minute)
	for {
		pods, err := e.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return err
		}
		left := 0
		for _, p := range pods.Items {
			if gone[p.Namespace] {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d pods of namespaces %s… still there 5 minutes after their deletion", left, prefix)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
