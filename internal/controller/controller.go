// Package controller decides when each configured repo is checked and deployed: one work
// queue keyed by (repo, environment), fed by polling, webhooks, the API and startup.
//
// A key is never processed twice at once, a burst of triggers for it collapses into one
// check, failures are retried with capped exponential backoff, and at most Concurrency
// keys are processed at a time. A commit whose manifests tree was already deployed is
// seen but not deployed again, unless forced.
package controller

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/util/workqueue"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/panics"
	"github.com/deployd/deployd/internal/source"
)

// Trigger says what asked for a check.
type Trigger string

// The triggers.
const (
	TriggerStartup Trigger = "startup"
	TriggerPoll    Trigger = "poll"
	TriggerWebhook Trigger = "webhook"
	TriggerAPI     Trigger = "api"
	TriggerConfig  Trigger = "config"
	// TriggerRollback deploys an earlier commit; it goes through even when the repo is paused.
	TriggerRollback Trigger = "rollback"
	// TriggerGitHubDeployment deploys the commit of a deployment created on GitHub.
	TriggerGitHubDeployment Trigger = "github-deployment"
	// TriggerDrift re-applies the applied commit because the cluster drifted from it;
	// unlike a rollback it waits while the repo is paused, and yields to any other request.
	TriggerDrift Trigger = "drift"
	// TriggerPromote deploys a commit to an entry with promoteFrom on an explicit request
	// (the API, deployd promote); the promotion gate still applies.
	TriggerPromote Trigger = "promote"
	// TriggerPromoteAuto tells an entry with promoteFrom that its source environment
	// ended a deployment of the commit: auto promotion deploys it, if the gate lets it.
	TriggerPromoteAuto Trigger = "auto-promote"
)

// Request asks for a repo to be checked.
type Request struct {
	// Trigger is what asked.
	Trigger Trigger
	// Force deploys even when the manifests did not change.
	Force bool
	// Commit, when set, deploys that commit instead of the branch head (fetched if the
	// cache lacks it).
	Commit string
	// GitHubDeploymentID is the GitHub deployment this request came from, if any.
	GitHubDeploymentID int64
	// Ref is the ref the GitHub deployment names (a branch, tag or SHA).
	Ref string
	// Note says why, for the deployment's record (a drift correction says what drifted).
	Note string
}

// merge combines two requests for the same key: forcing wins, the later trigger names
// it, and a commit asked for (a rollback) is kept.
func (r Request) merge(later Request) Request {
	// A drift correction yields to any other request, forced: that re-applies too.
	if r.Trigger == TriggerDrift && later.Trigger != TriggerDrift {
		later.Force = true
		return later
	}
	if later.Trigger == TriggerDrift && r.Trigger != TriggerDrift {
		r.Force = true
		return r
	}
	if later.Commit == "" && r.Commit != "" {
		r.Force = r.Force || later.Force
		return r
	}
	later.Force = r.Force || later.Force
	return later
}

// Checker resolves a repo's branch head and manifests tree, or a given commit's
// (source.Source does).
type Checker interface {
	Check(ctx context.Context, repo config.Repo) (source.Result, error)
	Resolve(ctx context.Context, repo config.Repo, commit string) (source.Revision, error)
}

// Deployment is a revision of a repo to deploy.
type Deployment struct {
	Repo     config.Repo
	Revision source.Revision
	Trigger  Trigger
	Forced   bool
	// GitHubDeploymentID is the GitHub deployment to report on (0: create one).
	GitHubDeploymentID int64
	// Ref is the GitHub deployment's ref, when it came from one.
	Ref string
	// Note is the request's note, for the record.
	Note string
}

// Deployer makes the cluster match a revision.
type Deployer interface {
	Deploy(ctx context.Context, d Deployment) error
}

// Skipper is told of new commits that are not deployed because their manifests equal the
// deployed ones (a Deployer may implement it to record them).
type Skipper interface {
	Skipped(ctx context.Context, d Deployment) error
}

// Refuser is told of a branch head that cannot be fetched because it is over a fetch
// limit (a Deployer may implement it to record the refusal); it is told once per commit.
type Refuser interface {
	Refused(ctx context.Context, d Deployment, err error) error
}

// DeployFunc adapts a function to Deployer.
type DeployFunc func(ctx context.Context, d Deployment) error

// Deploy calls f.
func (f DeployFunc) Deploy(ctx context.Context, d Deployment) error { return f(ctx, d) }

// PermanentError marks a deploy failure that retrying the same revision cannot cure
// (bad manifests, a rejected object): it is not retried until a new revision or a forced sync.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// HeldError is a deployer's answer for a revision it did not deploy on purpose: a
// promotion waiting for its source environment or a request, or refused by its gate. It
// is not retried, and the revision is remembered neither as deployed nor as failed: the
// next check asks again.
type HeldError struct{ Reason string }

func (e *HeldError) Error() string { return e.Reason }

// Held returns a HeldError saying why.
func Held(reason string) error { return &HeldError{Reason: reason} }

// Permanent wraps err as a PermanentError.
func Permanent(err error) error { return &PermanentError{Err: err} }

// Action is what processing a key did.
type Action string

// The actions.
const (
	// ActionDeployed: the revision was handed to the deployer, which succeeded.
	ActionDeployed Action = "deployed"
	// ActionNoManifestChange: a new commit whose manifests equal the deployed ones.
	ActionNoManifestChange Action = "seen, no manifest change"
	// ActionUpToDate: nothing new.
	ActionUpToDate Action = "up to date"
	// ActionCheckFailed: the repo could not be checked; it will be retried.
	ActionCheckFailed Action = "check failed"
	// ActionDeployFailed: the deployer failed; it will be retried, unless the failure was permanent.
	ActionDeployFailed Action = "deploy failed"
	// ActionPaused: the repo is paused; it was checked, not deployed.
	ActionPaused Action = "paused, not deployed"
	// ActionFailedBefore: the revision failed permanently before; waiting for a new one.
	ActionFailedBefore Action = "failed before, waiting for a change"
	// ActionRefused: the branch head is over a fetch limit; waiting for a new one.
	ActionRefused Action = "refused, waiting for a change"
	// ActionHeld: the deployer held the revision back (a promotion gate); Err says why.
	ActionHeld Action = "held by the promotion gate"
)

// Outcome reports one processing of a key, for logs and metrics.
type Outcome struct {
	Key      config.Key
	Request  Request
	Action   Action
	Result   source.Result
	Err      error
	Duration time.Duration
	// RetryIn is the backoff before the next attempt, after a failure.
	RetryIn time.Duration
	// Failures counts the key's failures in a row, this one included; 0 after a success.
	Failures int
}

// Options configure a Controller.
type Options struct {
	// Concurrency is how many repos are checked or deployed at once.
	Concurrency int
	// BackoffBase is the first retry delay after a failure; it doubles per failure.
	BackoffBase time.Duration
	// BackoffMax caps the retry delay.
	BackoffMax time.Duration
	// Jitter spreads polls: each interval is stretched or shrunk by up to this fraction.
	Jitter float64
	// Observe, when set, receives every outcome (called from worker goroutines).
	Observe func(Outcome)
}

// DefaultOptions returns 16 workers (they mostly wait on git and the API server), backoff from 1s to 5m, and ±10% poll jitter.
func DefaultOptions() Options {
	return Options{Concurrency: 16, BackoffBase: time.Second, BackoffMax: 5 * time.Minute, Jitter: 0.1}
}

// Controller runs the work queue.
type Controller struct {
	opts     Options
	checker  Checker
	deployer Deployer
	queue    workqueue.TypedRateLimitingInterface[config.Key]
	limiter  workqueue.TypedRateLimiter[config.Key]
	inflight atomic.Int64

	mu      sync.Mutex
	cfg     *config.Config
	pending map[config.Key]Request
	repos   map[config.Key]*repoState
}

// repoState is what the controller remembers of a repo.
type repoState struct {
	poll       *time.Timer
	paused     bool
	seenCommit string
	seenBefore bool
	// refusedCommit is the branch head last refused by a fetch limit, recorded once.
	refusedCommit string
	deployedTree  string
	failedTree    string
}

// stateOf returns what the controller remembers of key, creating it on first use; c.mu
// must be held.
func (c *Controller) stateOf(key config.Key) *repoState {
	st := c.repos[key]
	if st == nil {
		st = &repoState{}
		c.repos[key] = st
	}
	return st
}

// SetPaused pauses or resumes a repo: a paused repo is checked but not deployed.
func (c *Controller) SetPaused(key config.Key, paused bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stateOf(key).paused = paused
}

// Seed tells the controller what the history says was deployed last for key, before Run:
// a restarted deployd does not redeploy unchanged manifests.
func (c *Controller) Seed(key config.Key, deployedTree string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stateOf(key).deployedTree = deployedTree
}

// SeedFailed tells the controller, before Run, that key's manifests tree failed for good
// (its commit crashed deployd twice): it is not deployed again until a new tree or a
// forced request.
func (c *Controller) SeedFailed(key config.Key, tree string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stateOf(key).failedTree = tree
}

// New returns a controller; call SetConfig, then Run.
func New(checker Checker, deployer Deployer, opts Options) *Controller {
	limiter := workqueue.NewTypedItemExponentialFailureRateLimiter[config.Key](opts.BackoffBase, opts.BackoffMax)
	return &Controller{
		opts:     opts,
		checker:  checker,
		deployer: deployer,
		limiter:  limiter,
		queue:    workqueue.NewTypedRateLimitingQueueWithConfig(limiter, workqueue.TypedRateLimitingQueueConfig[config.Key]{}),
		pending:  map[config.Key]Request{},
		repos:    map[config.Key]*repoState{},
	}
}

// SetConfig makes cfg the config in force. The first config checks every repo
// (a push missed while deployd was down is picked up); later ones check added and
// changed repos and stop polling removed ones. Nothing is removed from the cluster.
func (c *Controller) SetConfig(cfg *config.Config) {
	c.mu.Lock()
	first := c.cfg == nil
	changes := config.Diff(c.cfg, cfg)
	c.cfg = cfg
	for _, k := range changes.Removed {
		if st := c.repos[k]; st != nil && st.poll != nil {
			st.poll.Stop()
		}
		delete(c.repos, k)
		delete(c.pending, k)
	}
	for _, k := range changes.Changed {
		if st := c.repos[k]; st != nil {
			st.deployedTree = "" // a new namespace or path must be deployed even with equal manifests
		}
	}
	c.mu.Unlock()

	trigger := TriggerConfig
	if first {
		trigger = TriggerStartup
	}
	for _, k := range append(changes.Added, changes.Changed...) {
		c.Enqueue(k, Request{Trigger: trigger})
	}
	for _, k := range changes.Removed {
		c.limiter.Forget(k)
	}
}

// Config returns the config in force.
func (c *Controller) Config() *config.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg
}

// Enqueue asks for key to be checked; it returns false when no such repo is configured.
// It never blocks on git or Kubernetes.
func (c *Controller) Enqueue(key config.Key, req Request) bool {
	c.mu.Lock()
	if c.cfg == nil {
		c.mu.Unlock()
		return false
	}
	if _, ok := c.cfg.Repo(key); !ok {
		c.mu.Unlock()
		return false
	}
	if prev, ok := c.pending[key]; ok {
		req = prev.merge(req)
	}
	c.pending[key] = req
	c.mu.Unlock()
	c.queue.Add(key)
	return true
}

// Len is the number of keys waiting to be processed.
func (c *Controller) Len() int { return c.queue.Len() }

// Run processes the queue with Concurrency workers until ctx ends. In-flight work
// sees ctx's cancellation.
func (c *Controller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range max(c.opts.Concurrency, 1) {
		wg.Go(func() {
			for c.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	c.mu.Lock()
	for _, st := range c.repos {
		if st.poll != nil {
			st.poll.Stop()
		}
	}
	c.mu.Unlock()
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	c.inflight.Add(1)
	defer c.inflight.Add(-1)
	c.process(ctx, key)
	return true
}

// Idle reports whether no key is queued or being processed (rollouts being waited for
// hold no worker and do not count).
func (c *Controller) Idle() bool { return c.queue.Len() == 0 && c.inflight.Load() == 0 }

// take returns the key's repo and its merged request, and its state.
func (c *Controller) take(key config.Key) (config.Repo, Request, *repoState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	repo, ok := c.cfg.Repo(key)
	if !ok {
		return config.Repo{}, Request{}, nil, false
	}
	req, ok := c.pending[key]
	if !ok {
		req = Request{Trigger: TriggerPoll}
	}
	delete(c.pending, key)
	return repo, req, c.stateOf(key), true
}

func (c *Controller) process(ctx context.Context, key config.Key) {
	repo, req, st, ok := c.take(key)
	if !ok {
		c.limiter.Forget(key) // removed from the config while queued
		return
	}
	start := time.Now()
	out := Outcome{Key: key, Request: req}
	defer func() {
		out.Duration = time.Since(start)
		if out.Err != nil {
			out.Failures = c.limiter.NumRequeues(key)
		}
		if c.opts.Observe != nil {
			c.opts.Observe(out)
		}
	}()
	// The last guard: a panic the calls below did not turn into an error (they do) is
	// told as a failed check and retried after the backoff, never the process's end.
	defer func() {
		var p *panics.Error
		if errors.As(out.Err, &p) && out.Action == "" {
			out.Action, out.RetryIn = ActionCheckFailed, c.retry(key, req)
		}
	}()
	defer panics.Recover(&out.Err)

	if req.Commit != "" {
		req.Force = true
	}
	out.Result, out.Err = c.check(ctx, repo, req.Commit, req.Trigger == TriggerPoll)
	var over *source.FetchLimitError
	if errors.As(out.Err, &over) && req.Commit == "" {
		out.Action = ActionRefused
		c.refused(ctx, repo, req, st, out.Result.Revision, out.Err)
		c.limiter.Forget(key)
		c.schedulePoll(key, repo.Interval)
		return
	}
	if out.Err != nil && req.Commit != "" {
		out.Action = ActionCheckFailed // the commit is not in the cache: retrying will not bring it
		return
	}
	if out.Err != nil {
		out.Action = ActionCheckFailed
		out.RetryIn = c.retry(key, req)
		return
	}
	c.mu.Lock()
	unchanged := out.Result.Tree == st.deployedTree
	failedBefore := out.Result.Tree == st.failedTree
	newCommit := out.Result.Commit != st.seenCommit
	// Only a rollback, asked for through the token-protected API, deploys through a
	// pause: a GitHub deployment (a signed webhook, which can be replayed) waits like a push.
	paused := st.paused && req.Trigger != TriggerRollback
	if req.Commit == "" {
		st.seenBefore = st.seenCommit != ""
		st.seenCommit = out.Result.Commit
	}
	c.mu.Unlock()
	switch {
	case paused:
		out.Action = ActionPaused
	case unchanged && !req.Force && newCommit:
		out.Action = ActionNoManifestChange
		if sk, ok := c.deployer.(Skipper); ok && st.seenBefore {
			out.Err = sk.Skipped(ctx, Deployment{Repo: repo, Revision: out.Result.Revision, Trigger: req.Trigger})
		}
	case unchanged && !req.Force:
		out.Action = ActionUpToDate
	case failedBefore && !req.Force:
		out.Action = ActionFailedBefore
	default:
		d := Deployment{Repo: repo, Revision: out.Result.Revision, Trigger: req.Trigger, Forced: req.Force,
			GitHubDeploymentID: req.GitHubDeploymentID, Ref: req.Ref, Note: req.Note}
		out.Err = c.deploy(ctx, d)
		var permanent *PermanentError
		var held *HeldError
		switch {
		case errors.As(out.Err, &held):
			out.Action = ActionHeld
		case errors.As(out.Err, &permanent):
			out.Action = ActionDeployFailed
			c.mu.Lock()
			st.failedTree = out.Result.Tree
			c.mu.Unlock()
		case out.Err != nil:
			out.Action = ActionDeployFailed
			out.RetryIn = c.retry(key, req)
			return
		default:
			c.mu.Lock()
			st.deployedTree, st.failedTree = out.Result.Tree, ""
			c.mu.Unlock()
			out.Action = ActionDeployed
		}
	}
	c.limiter.Forget(key)
	c.schedulePoll(key, repo.Interval)
}

// refused has a refused branch head recorded, once per commit: retrying cannot fetch it
// (the source does not even try while the branch stays there), a new commit may.
func (c *Controller) refused(ctx context.Context, repo config.Repo, req Request, st *repoState, rev source.Revision, err error) {
	c.mu.Lock()
	seen := rev.Commit == "" || st.refusedCommit == rev.Commit
	c.mu.Unlock()
	if seen {
		return
	}
	if r, ok := c.deployer.(Refuser); ok {
		if r.Refused(ctx, Deployment{Repo: repo, Revision: rev, Trigger: req.Trigger}, err) != nil {
			return // not recorded: the next check tries again
		}
	}
	c.mu.Lock()
	st.refusedCommit = rev.Commit
	c.mu.Unlock()
}

// Poller is a Checker with a cheaper check for polls, which mostly find nothing new.
type Poller interface {
	Poll(ctx context.Context, repo config.Repo) (source.Result, error)
}

// check resolves the branch head, or commit when set, behind a recover: a panic fails
// the check (retried after the backoff). A poll goes through the checker's Poll, if it
// has one.
func (c *Controller) check(ctx context.Context, repo config.Repo, commit string, poll bool) (res source.Result, err error) {
	defer panics.Recover(&err)
	if commit != "" {
		res.Revision, err = c.checker.Resolve(ctx, repo, commit)
		return res, err
	}
	if p, ok := c.checker.(Poller); ok && poll {
		return p.Poll(ctx, repo)
	}
	return c.checker.Check(ctx, repo)
}

// deploy hands d to the deployer behind a recover: a panic fails the revision for good,
// as the same input would panic again.
func (c *Controller) deploy(ctx context.Context, d Deployment) (err error) {
	defer func() {
		var p *panics.Error
		if errors.As(err, &p) {
			err = Permanent(err)
		}
	}()
	defer panics.Recover(&err)
	return c.deployer.Deploy(ctx, d)
}

// retry requeues key after its backoff, keeping its request (a forced sync stays forced).
// Polling pauses meanwhile, so a dead server is asked at the backoff's pace.
func (c *Controller) retry(key config.Key, req Request) time.Duration {
	delay := c.limiter.When(key)
	c.mu.Lock()
	if prev, ok := c.pending[key]; ok {
		req = req.merge(prev)
	}
	c.pending[key] = req
	if st := c.repos[key]; st != nil && st.poll != nil {
		st.poll.Stop()
	}
	c.mu.Unlock()
	c.queue.AddAfter(key, delay)
	return delay
}

// schedulePoll (re)arms key's poll timer, with jitter; 0 means no polling.
func (c *Controller) schedulePoll(key config.Key, interval time.Duration) {
	if interval <= 0 {
		return
	}
	d := time.Duration(float64(interval) * (1 + c.opts.Jitter*(2*rand.Float64()-1)))
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.repos[key]
	if st == nil {
		return
	}
	if st.poll == nil {
		st.poll = time.AfterFunc(d, func() { c.Enqueue(key, Request{Trigger: TriggerPoll}) })
		return
	}
	st.poll.Reset(d)
}
