package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/deployd/deployd/internal/api"
	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/checks"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/deploy"
	"github.com/deployd/deployd/internal/drift"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/metrics"
	"github.com/deployd/deployd/internal/panics"
	"github.com/deployd/deployd/internal/promote"
	"github.com/deployd/deployd/internal/report"
	"github.com/deployd/deployd/internal/rollout"
	"github.com/deployd/deployd/internal/source"
	deploydstate "github.com/deployd/deployd/internal/state"
	"github.com/deployd/deployd/internal/tag"
	"github.com/deployd/deployd/internal/view"
)

// parts are the real deployment path: apply, rollout tracking, history, the runner.
type parts struct {
	kube    kubernetes.Interface
	applier *apply.Applier
	tracker *rollout.Tracker
	states  *deploydstate.Store
	store   *history.Store
	runner  *deploy.Runner
	view    *view.View
	ctl     *controller.Controller
	meter   *metrics.Metrics
	report  *report.Reporter // nil when reporting to GitHub is off
	// checks publishes pull request previews to GitHub (check runs, or statuses and
	// comments); nil when reporting to GitHub is off.
	checks  *checks.Publisher
	ledger  *report.Ledger // reads GitHub's deployments; nil when reporting is off
	gate    *promote.Gate  // the controller's deployer: the runner behind the promotion gate
	tagger  *tag.Tagger
	drift   *drift.Detector
	leading func() bool // set once the router exists: only the leader corrects drift
	// driftPoke asks publishDrift to store the drift that changed, for the followers.
	driftPoke chan struct{}
	// deployed is the deployed record last watched per repo, on a follower.
	deployedMu sync.Mutex
	deployed   map[config.Key]int

	// work is the background work's context and wg tracks its goroutines (the
	// daemon's): watches of deployed objects run in them.
	work context.Context
	wg   *sync.WaitGroup
}

// buildReporting sets up GitHub reporting, or says once that it is off.
func (p *parts) buildReporting(opts Options, meter *metrics.Metrics, log *slog.Logger) error {
	if !opts.GitHub.Enabled() {
		log.Info("GitHub reporting is off: give --github-token-file or a GitHub App to report deployments to GitHub")
		return nil
	}
	gopts := opts.GitHub
	if gopts.TokenFile != "" {
		if _, err := os.Stat(gopts.TokenFile); err != nil {
			log.Warn("GitHub reporting is off: the token file cannot be read (restart deployd once it exists)", "err", err)
			return nil
		}
	}
	gopts.OnResponse = meter.GitHubResponse
	api, err := report.NewClient(gopts)
	if err != nil {
		return err
	}
	ropts := report.DefaultOptions()
	ropts.PublicURL = opts.PublicURL
	ropts.Reported = func(repo config.Repo, number int, id int64, state string) {
		g := history.GitHub{DeploymentID: id, State: state}
		p.view.SetGitHub(repo.Key(), number, g)
		if state == "in_progress" {
			return // the id is stored with "queued"; the final state follows: a write saved
		}
		sctx, cancel := context.WithTimeout(p.work, 10*time.Second)
		defer cancel()
		if err := p.store.SetGitHub(sctx, repo, number, g); err != nil {
			log.Warn("could not record the GitHub deployment", "repo", repo.Name, "env", repo.Environment, "deployment", number, "err", err)
		}
	}
	ropts.Dropped = func(repo config.Repo, number int, state, reason string) {
		meter.GitHubDropped()
		log.Warn("GitHub report dropped", "repo", repo.Name, "env", repo.Environment, "deployment", number, "state", state, "reason", reason)
	}
	p.report = report.New(api, ropts)
	if p.checks, err = checks.NewForGitHub(gopts, checks.DefaultOptions()); err != nil {
		return err
	}
	if p.ledger, err = report.NewLedger(gopts); err != nil {
		return err
	}
	log.Info("reporting deployments to GitHub", "api", gopts.APIURL, "app", gopts.AppID != 0)
	return nil
}

// startReporting starts reporting to GitHub, when it is on, until ctx ends.
func (p *parts) startReporting(ctx context.Context) {
	if p.report != nil {
		p.report.Start(ctx)
	}
	p.tagger.Start(ctx)
}

// newTagger pushes the deployment tags of the repos that ask for them, telling the view,
// the log and the metrics how each push went. The state ConfigMap keeps a tag's start
// and end (not every retry), for the followers and the next leader.
func (p *parts) newTagger(src *source.Source, opts Options, log *slog.Logger) *tag.Tagger {
	topts := opts.Tagging
	topts.PublicURL = opts.PublicURL
	topts.Several = func(repo config.Repo) bool { return len(p.view.Entries(repo.Name)) > 1 }
	topts.Attempted = p.meter.TagPush
	topts.Changed = func(repo config.Repo, number int, st tag.Status) {
		p.showTag(repo, number, st, log)
		if st.Attempts > 0 && st.State == tag.Pending {
			return
		}
		sctx, cancel := context.WithTimeout(p.work, 10*time.Second)
		defer cancel()
		if err := p.store.SetTag(sctx, repo, number, st); err != nil && p.work.Err() == nil {
			log.Warn("could not record the deployment tag's state", "repo", repo.Name, "env", repo.Environment, "deployment", number, "err", err)
		}
	}
	topts.Dropped = func(repo config.Repo, number int, st tag.Status) { p.showTag(repo, number, st, log) }
	return tag.New(src, topts)
}

// showTag puts a tag's status in the view, and logs how a push went.
func (p *parts) showTag(repo config.Repo, number int, st tag.Status, log *slog.Logger) {
	p.view.SetTag(repo.Key(), number, st)
	attrs := []any{"repo", repo.Name, "env", repo.Environment, "deployment", number, "tag", st.Name, "attempts", st.Attempts}
	switch {
	case st.State == tag.Pushed:
		log.Info("deployment tagged", attrs...)
	case st.State == tag.Failed:
		log.Warn("deployment tag not pushed; given up", append(attrs, "err", st.Error)...)
	case st.Error != "":
		log.Warn("deployment tag push failed; retrying", append(attrs, "err", st.Error)...)
	}
}

// newParts builds the deployment path; its background work runs in work, tracked by wg.
func newParts(work context.Context, wg *sync.WaitGroup, cfg *rest.Config, src *source.Source, state *view.View, opts Options, meter *metrics.Metrics, log *slog.Logger) (*parts, error) {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	states := deploydstate.New(kube, opts.Namespace)
	applyOpts := apply.DefaultOptions()
	applyOpts.StateNamespace, applyOpts.States = opts.Namespace, states
	applier, err := apply.New(cfg, applyOpts)
	if err != nil {
		return nil, err
	}
	tracker, err := rollout.NewTracker(cfg)
	if err != nil {
		return nil, err
	}
	tracker.Panicked = func(object string, err error) {
		log.Error("computing an object's status panicked; its status is unknown until it changes", "object", object, "err", err)
		if p := (*panics.Error)(nil); errors.As(err, &p) {
			log.Debug("panic caught", "object", object, "err", err, "stack", string(p.Stack))
		}
	}
	p := &parts{kube: kube, applier: applier, tracker: tracker, states: states, store: history.NewStore(states, opts.HistoryLimit), view: state,
		meter: meter, work: work, wg: wg, deployed: map[config.Key]int{}, driftPoke: make(chan struct{}, 1)}
	p.tagger = p.newTagger(src, opts, log)
	p.drift = newDrift(p, opts.Drift)
	meter.Drift(p.drift.Counts)
	p.runner = deploy.New(src, drift.Applier{Next: applier, Detector: p.drift}, tracker, p.store, func(e deploy.Event) {
		logEvent(log, e)
		state.Record(e.Repo.Key(), e.Record)
		p.meter.Event(e)
		if p.report != nil {
			p.report.Record(e.Repo, e.Record, e.GitHubDeploymentID)
		}
		p.promoteAfter(e)
		p.tagger.Record(e.Repo, e.Record)
	})
	p.runner.Cluster = applier // a chart's .Capabilities
	return p, nil
}

// recoverHistory reads every repo's history and pause state before the first check:
// the last deployed tree is seeded into the controller, the view gets the records, the
// deployed objects are watched again, and interrupted deployments are returned to redo.
func (p *parts) recoverHistory(ctx context.Context, ctl *controller.Controller, cfg *config.Config, log *slog.Logger) []config.Key {
	p.ctl = ctl
	var redo []config.Key
	if err := p.preload(ctx, cfg); err != nil {
		log.Warn("could not list the state ConfigMaps; reading them one by one", "err", err)
	}
	for _, repo := range cfg.Repos {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rec, err := p.runner.Recover(rctx, repo)
		cancel()
		if err != nil {
			log.Warn("could not read the repo's history; it will be redeployed", "repo", repo.Name, "env", repo.Environment, "err", err)
			continue
		}
		ctl.Seed(repo.Key(), rec.DeployedTree)
		p.view.LoadHistory(repo.Key(), rec.Records)
		p.retag(repo, rec.Records)
		if rec.Pause.Paused {
			ctl.SetPaused(repo.Key(), true)
			p.view.SetPause(repo.Key(), view.Pause(rec.Pause))
		}
		p.expectDrift(repo)
		p.watchDeployed(repo, log)
		if rec.CrashedTree != "" {
			ctl.SeedFailed(repo.Key(), rec.CrashedTree)
			log.Error("a deployment crashed deployd twice; not deploying it again until a new commit or a forced sync", "repo", repo.Name, "env", repo.Environment)
		}
		if rec.Interrupted {
			log.Warn("a deployment was interrupted by a restart; deploying again", "repo", repo.Name, "env", repo.Environment)
			redo = append(redo, repo.Key())
		}
	}
	return redo
}

// retag pushes, on a new leader, the tags the last one left pending, and that of the
// newest tagged record when none was started (deployd stopped as it ended); recs are
// newest first. A tag the last leader did push after all is found there.
func (p *parts) retag(repo config.Repo, recs []history.Record) {
	if !repo.TagDeployments {
		return
	}
	var todo []history.Record
	newest := true
	for _, r := range recs {
		if !tag.Tagged(r.Phase) {
			continue
		}
		if (r.Tag == nil && newest) || (r.Tag != nil && r.Tag.State == tag.Pending) {
			todo = append(todo, r)
		}
		newest = false
	}
	for i := len(todo) - 1; i >= 0; i-- { // oldest first: the tagger takes numbers in order
		p.tagger.Record(repo, todo[i])
	}
}

// preload reads the state ConfigMaps of cfg's repos with one list.
func (p *parts) preload(ctx context.Context, cfg *config.Config) error {
	names := make([]string, len(cfg.Repos))
	for i, repo := range cfg.Repos {
		names[i] = repo.StateName()
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return p.states.Preload(ctx, names)
}

// watchDeployed starts watching the objects of the repo's deployed record, in the
// background, so the API shows their status after a restart.
func (p *parts) watchDeployed(repo config.Repo, log *slog.Logger) {
	e, ok := p.view.Entry(repo.Key())
	if !ok {
		return
	}
	dep, ok := e.Deployed()
	if !ok {
		return
	}
	var refs []apply.Ref
	for _, o := range dep.Objects {
		if o.Kind != "" && o.Action != string(apply.Pruned) && o.Action != string(apply.PruneSkipped) {
			refs = append(refs, api.RefOf(o))
		}
	}
	p.wg.Go(func() {
		wctx, cancel := context.WithTimeout(p.work, time.Minute)
		defer cancel()
		if err := p.tracker.Watch(wctx, refs); err != nil && p.work.Err() == nil {
			log.Warn("could not watch the deployed objects", "repo", repo.Name, "env", repo.Environment, "err", err)
		}
	})
}

// shown notes that the repo's deployed record is number, and reports whether it is new.
func (p *parts) shown(key config.Key, number int) bool {
	p.deployedMu.Lock()
	defer p.deployedMu.Unlock()
	seen := p.deployed[key] == number
	p.deployed[key] = number
	return !seen
}

// SetPause stores the pause state, then applies it to the controller and the view.
func (p *parts) SetPause(ctx context.Context, repo config.Repo, pause view.Pause) error {
	if err := p.store.SetPause(ctx, repo, history.Pause(pause)); err != nil {
		return err
	}
	p.ctl.SetPaused(repo.Key(), pause.Paused)
	p.view.SetPause(repo.Key(), pause)
	return nil
}

// expectDrift tells the drift detector, on the leader at start, which objects the
// repo's deployed record applied.
func (p *parts) expectDrift(repo config.Repo) {
	e, ok := p.view.Entry(repo.Key())
	if !ok {
		return
	}
	dep, ok := e.Deployed()
	if !ok {
		return
	}
	var refs []apply.Ref
	for _, o := range dep.Objects {
		if o.Kind != "" && o.Action != string(apply.Pruned) && o.Action != string(apply.PruneSkipped) {
			refs = append(refs, api.RefOf(o))
		}
	}
	p.drift.Expect(repo, dep.Commit.SHA, refs)
}

// newDrift makes the drift detector: it sees what the tracker's watches see, and
// corrects through the work queue, on the leader, when the repo is not paused.
func newDrift(p *parts, opts drift.Options) *drift.Detector {
	opts.Changed = func() { p.tracker.Touch(); p.pokeDrift() }
	opts.Paused = func(key config.Key) bool {
		e, ok := p.view.Entry(key)
		return ok && e.Pause.Paused
	}
	var d *drift.Detector
	opts.Correct = func(repo config.Repo, commit, note string) bool {
		if p.ctl == nil || p.leading == nil || !p.leading() {
			return false
		}
		if !p.ctl.Enqueue(repo.Key(), controller.Request{Trigger: controller.TriggerDrift, Commit: commit, Note: note}) {
			d.Forget(repo.Key()) // no longer configured
			return false
		}
		return true
	}
	opts.Check = func(ctx context.Context, repo config.Repo, commit string) ([]drift.Object, error) {
		objs, err := p.runner.Objects(ctx, repo, commit)
		if err != nil {
			return nil, err
		}
		found, err := p.applier.Drifted(ctx, apply.Request{Repo: repo, Commit: commit, Objects: objs})
		out := make([]drift.Object, len(found))
		for i, f := range found {
			out[i] = drift.Object{Ref: f.Object, Deleted: f.Deleted}
			for _, path := range f.Paths {
				out[i].Fields = append(out[i].Fields, drift.Field{Path: path})
			}
		}
		return out, err
	}
	d = drift.New(opts)
	p.tracker.Observe(d.Observe)
	return d
}

// buildGate puts the promotion gate in front of the runner (after buildReporting: a
// source environment in another cluster is asked through GitHub).
func (p *parts) buildGate() {
	var ledger promote.Ledger
	if p.ledger != nil {
		ledger = p.ledger
	}
	p.gate = promote.New(p.runner, p.runner, p.store, ledger, p.view.Config, p.view)
}

// promoteAfter tells the entries that promote from e's environment that a deployment of
// a commit ended there (in-process, at once): auto promotion deploys it if it succeeded
// and the gate agrees; a failure is recorded as blocked; manual promotion shows it as
// waiting. Drift corrections and rollbacks redo a commit and promote nothing.
func (p *parts) promoteAfter(e deploy.Event) {
	r := e.Record
	switch {
	case p.ctl == nil, r.Commit.SHA == "",
		r.Trigger == string(controller.TriggerDrift), r.Trigger == string(controller.TriggerRollback):
		return
	case r.Phase != history.Succeeded && r.Phase != history.Failed && r.Phase != history.Error:
		return
	}
	cfg := p.view.Config()
	if cfg == nil {
		return
	}
	for _, to := range cfg.Promoters(e.Repo.Key()) {
		p.ctl.Enqueue(to.Key(), controller.Request{Trigger: controller.TriggerPromoteAuto, Commit: r.Commit.SHA,
			Note: fmt.Sprintf("%s %s with %s", e.Repo.Environment, r.Phase, source.ShortSHA(r.Commit.SHA))})
	}
}
