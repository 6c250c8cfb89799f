// Package deploy runs one deployment of a repo revision end to end: it numbers it in the
// history, renders and applies the manifests, then waits for the rollout in the
// background, so a waiting deployment holds none of the controller's workers.
package deploy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/panics"
	"github.com/deployd/deployd/internal/render"
	"github.com/deployd/deployd/internal/rollout"
	"github.com/deployd/deployd/internal/source"
)

// Files reads a commit's files from the git cache (source.Source does).
type Files interface {
	Files(repo config.Repo, commit, dir string, lim source.Limits) (map[string][]byte, error)
}

// Applier applies a set of objects (apply.Applier does).
type Applier interface {
	Apply(ctx context.Context, req apply.Request) (apply.Result, error)
}

// Cluster tells a Helm chart's templates what the cluster serves (.Capabilities);
// apply.Applier does.
type Cluster interface {
	Capabilities(ctx context.Context) (*render.Capabilities, error)
}

// Waiter waits for applied objects to roll out (rollout.Tracker does).
type Waiter interface {
	Wait(ctx context.Context, targets []rollout.Target, timeout time.Duration) rollout.WaitResult
}

// History keeps the repos' deployment records (history.Store does).
type History interface {
	Create(ctx context.Context, repo config.Repo, rec history.Record) (history.Record, error)
	Update(ctx context.Context, repo config.Repo, rec history.Record) error
	List(ctx context.Context, repo config.Repo) ([]history.Record, error)
	Pause(ctx context.Context, repo config.Repo) (history.Pause, error)
}

var _ History = (*history.Store)(nil)

// Event tells of a phase change, for logs, metrics, the API's event stream and reporters.
type Event struct {
	Repo   config.Repo
	Record history.Record
	// GitHubDeploymentID is set when the deployment came from a GitHub deployment.
	GitHubDeploymentID int64
	// Rebuilt is set, on the event ending the apply, when the repo's inventory was
	// missing and rebuilt from live objects (the record's note says so too).
	Rebuilt *apply.Rebuilt
	// Stack is set, on the event ending a deployment that panicked, to the panicking
	// goroutine's stack: for the debug log, never for the record.
	Stack []byte
}

// DefaultMaxObjects is how many objects one repo may render to.
const DefaultMaxObjects = 1000

// repoFiles multiplies the file limit for a kustomization's read of the whole repo: its
// bases may be anywhere, next to the app's code, and the byte limit still bounds memory.
const repoFiles = 10

// Runner runs deployments; it is the controller's Deployer.
type Runner struct {
	// MaxObjects bounds the objects one repo may render to; more fails the deployment.
	MaxObjects int
	// Limits bound the files read under the manifests path (a kustomization's read of
	// the whole repo may have ten times MaxFiles); more fails the deployment for good.
	Limits source.Limits
	// Cluster, when set, gives Helm charts the cluster's version and APIs; without it
	// they see Helm's defaults.
	Cluster Cluster

	files   Files
	applier Applier
	waiter  Waiter
	history History
	notify  func(Event)

	mu      sync.Mutex
	waiting map[config.Key]*wait
	// unsaved are ended records whose write failed (the API server was away), by repo:
	// the repo's next deployment stores them first.
	unsaved map[config.Key][]history.Record
	// redos are the commits Recover found interrupted and left to redo, by repo, with
	// the crashes counted so far: the redo's record carries them on.
	redos map[config.Key]redo
	wg    sync.WaitGroup
}

// redo is an interrupted commit to deploy again, and how often it crashed deployd.
type redo struct {
	commit  string
	crashes int
}

// MaxCrashes is how many times deployd may be killed while deploying one commit before
// that commit is no longer redone at start: a commit whose deployment kills deployd
// (out of memory, a fatal runtime error) would otherwise crash it at every start, and
// every other replica that takes over.
const MaxCrashes = 2

// crashedTwice starts the error of a commit that was not redone after MaxCrashes.
const crashedTwice = "crashed deployd twice"

// wait is a deployment whose rollout is being waited for.
type wait struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
}

var _ controller.Deployer = (*Runner)(nil)

// errSuperseded cancels a wait that a newer deployment replaces; errStopped one that
// deployd's shutdown ends (left unrecorded, so the next start redoes it).
var (
	errSuperseded = errors.New("superseded by a newer deployment")
	errStopped    = errors.New("deployd stopped")
)

// New returns a Runner; notify (optional) is called after every record change.
func New(files Files, applier Applier, waiter Waiter, store History, notify func(Event)) *Runner {
	if notify == nil {
		notify = func(Event) {}
	}
	return &Runner{MaxObjects: DefaultMaxObjects, Limits: source.DefaultLimits(), files: files, applier: applier, waiter: waiter, history: store, notify: notify, waiting: map[config.Key]*wait{}, unsaved: map[config.Key][]history.Record{}, redos: map[config.Key]redo{}}
}

// Deploy applies a revision and starts waiting for its rollout. It returns once the
// apply is done; the wait's outcome goes to the history. Bad manifests and rejected
// objects are permanent failures (controller.Permanent).
func (r *Runner) Deploy(ctx context.Context, d controller.Deployment) error {
	r.supersede(d.Repo.Key())
	if err := r.saveUnsaved(ctx, d.Repo); err != nil {
		return fmt.Errorf("recording the end of an earlier deployment: %w", err)
	}
	// Only the start and the end of a deployment are stored: a restart takes any record
	// not ended as interrupted, whether it was applying or waiting, so the phases between
	// are told (to the API, its events and GitHub) but not written.
	rec := recordOf(d, history.Applying, time.Now().UTC())
	rec.Note = note(d)
	rec.Crashes = r.takeRedo(d.Repo.Key(), d.Revision.Commit)
	gh := d.GitHubDeploymentID
	// The record is written while the manifests render and the cluster is read; the
	// apply waits for it (recorded) before its first write, so a crash after any write
	// finds it. It is told of (queued, applying) once rendered: the images go with the
	// record from its start (the GitHub deployment created for it carries them, for
	// another cluster's promotion).
	var (
		stored    history.Record
		createErr error
	)
	created := make(chan struct{})
	go func() {
		defer close(created)
		defer panics.Recover(&createErr)
		var err error
		if stored, err = r.history.Create(ctx, d.Repo, rec); err != nil {
			createErr = fmt.Errorf("recording the deployment: %w", err)
		}
	}()
	rendered, renderErr := r.renderSafely(ctx, d)
	recorded := sync.OnceValues(func() (int, error) {
		<-created
		if createErr != nil {
			return 0, createErr
		}
		rec = stored
		rec.Renderer = rendered.Renderer
		if c := rendered.Chart; c != nil {
			rec.Chart = history.Chart{Name: c.Name, Version: c.Version}
		}
		if renderErr == nil {
			rec.Images, rec.ImagesRecorded = imagesOf(rendered.Objects)
		}
		queued := rec.Clone()
		queued.Phase = history.Queued
		r.notify(Event{Repo: d.Repo, Record: queued, GitHubDeploymentID: gh})
		r.notify(Event{Repo: d.Repo, Record: rec.Clone(), GitHubDeploymentID: gh})
		return rec.Number, nil
	})
	var res apply.Result
	err := renderErr
	if err == nil {
		res, err = r.applySafely(ctx, d, recorded, rendered.Objects)
	}
	if _, cerr := recorded(); cerr != nil {
		return cerr // the apply wrote nothing without it
	}
	rec.Objects = objectsOf(res.Changes)
	if res.Rebuilt != nil {
		rec.Note = joinText(rec.Note, res.Rebuilt.Note())
	}
	if err != nil {
		rec.Phase, rec.Error, rec.Ended = history.Error, err.Error(), time.Now().UTC()
		r.save(Event{Repo: d.Repo, Record: rec, GitHubDeploymentID: gh, Rebuilt: res.Rebuilt, Stack: stackOf(err)})
		return err
	}
	rec.Phase = history.Waiting
	r.notify(Event{Repo: d.Repo, Record: rec.Clone(), GitHubDeploymentID: gh, Rebuilt: res.Rebuilt})
	r.startWait(d.Repo, rec, rollout.TargetsOf(res.Changes), gh)
	return nil
}

// applySafely is apply behind a recover: a panic, in it or in a goroutine of the apply
// (which recovers its own), fails this deployment for good instead of ending deployd.
func (r *Runner) applySafely(ctx context.Context, d controller.Deployment, recorded func() (int, error), objs []render.Object) (res apply.Result, err error) {
	defer permanentPanic(&err)
	defer panics.Recover(&err)
	return r.apply(ctx, d, recorded, objs)
}

// renderSafely renders d's revision behind a recover, like applySafely.
func (r *Runner) renderSafely(ctx context.Context, d controller.Deployment) (res render.Result, err error) {
	defer permanentPanic(&err)
	defer panics.Recover(&err)
	return r.render(ctx, d.Repo, d.Revision.Commit)
}

// permanentPanic makes a recovered panic a permanent failure: the same input would panic again.
func permanentPanic(err *error) {
	var p *panics.Error
	if errors.As(*err, &p) {
		*err = controller.Permanent(*err)
	}
}

// imagesOf is the images of objs for a record; not recorded when over render.MaxImages.
func imagesOf(objs []render.Object) ([]string, bool) {
	images, err := render.Images(objs)
	return images, err == nil
}

// takeRedo returns the crashes counted for commit when it is the repo's interrupted
// commit being redone (0 otherwise), and forgets the redo.
func (r *Runner) takeRedo(key config.Key, commit string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	rd, ok := r.redos[key]
	delete(r.redos, key)
	if !ok || rd.commit != commit {
		return 0
	}
	return rd.crashes
}

func (r *Runner) apply(ctx context.Context, d controller.Deployment, recorded func() (int, error), objs []render.Object) (apply.Result, error) {
	res, err := r.applier.Apply(ctx, apply.Request{Repo: d.Repo, Commit: d.Revision.Commit, Recorded: recorded, Objects: objs})
	var invalid *apply.ValidationError
	if errors.As(err, &invalid) {
		return res, controller.Permanent(err)
	}
	return res, err
}

// Objects renders repo's manifests at commit, within the Runner's limits (for drift's
// dry run of the applied commit).
func (r *Runner) Objects(ctx context.Context, repo config.Repo, commit string) ([]render.Object, error) {
	res, err := r.render(ctx, repo, commit)
	return res.Objects, err
}

// render reads and renders repo's manifests at commit; what the commit is to blame for
// is a controller.Permanent error.
func (r *Runner) render(ctx context.Context, repo config.Repo, commit string) (render.Result, error) {
	return Render(ctx, r.files, r.Cluster, repo, commit, r.Limits, r.MaxObjects)
}

// Render reads and renders repo's manifests at commit from files, within limits and
// maxObjects, as a deployment does (previews render with it too); cluster (optional)
// gives a Helm chart the cluster's capabilities. What the commit is to blame for is a
// controller.Permanent error.
func Render(ctx context.Context, files Files, cluster Cluster, repo config.Repo, commit string, limits source.Limits, maxObjects int) (render.Result, error) {
	read, err := files.Files(repo, commit, repo.ManifestPath(), limits)
	if err != nil {
		return render.Result{}, readErr(err)
	}
	chart := render.IsChart(read, repo.ManifestPath())
	if chart || render.IsKustomization(read, repo.ManifestPath()) {
		// An overlay may reach ../base anywhere in the repo, next to the app's own code;
		// a chart its values files and file:// dependencies.
		lim := limits
		lim.MaxFiles *= repoFiles
		if read, err = files.Files(repo, commit, ".", lim); err != nil {
			return render.Result{}, readErr(err)
		}
	}
	opts, err := renderOptions(ctx, cluster, repo, chart, maxObjects)
	if err != nil {
		return render.Result{}, err
	}
	rctx, cancel := context.WithTimeout(ctx, render.DefaultTimeout)
	res, err := render.RenderWith(rctx, read, repo.ManifestPath(), opts)
	cancel()
	var bad *render.Error
	if err != nil && (ctx.Err() != nil || !errors.As(err, &bad)) {
		// Stopped or superseded, or a worker that could not start: not the commit's fault.
		return res, fmt.Errorf("rendering %s: %w", repo.ManifestPath(), err)
	}
	if err != nil {
		return res, controller.Permanent(fmt.Errorf("rendering %s: %w", repo.ManifestPath(), err))
	}
	return res, nil
}

// renderOptions are repo's options for rendering: its limits, and a chart's release,
// values and the cluster's capabilities.
func renderOptions(ctx context.Context, cluster Cluster, repo config.Repo, chart bool, maxObjects int) (render.Options, error) {
	opts := render.Options{Limits: render.DefaultLimits(), Environment: repo.Environment, Namespace: repo.Namespace,
		ReleaseName: repo.HelmReleaseName(), Values: repo.Values, Set: repo.Set}
	opts.Limits.MaxObjects = maxObjects
	if chart && cluster != nil {
		caps, err := cluster.Capabilities(ctx)
		if err != nil {
			return opts, fmt.Errorf("rendering %s: reading the cluster's capabilities for the chart: %w", repo.ManifestPath(), err)
		}
		opts.Capabilities = caps
	}
	return opts, nil
}

// readErr classifies an error reading a commit's files: over a limit is the commit's
// fault, for good (controller.Permanent); anything else (the cache, the disk) is retried.
func readErr(err error) error {
	var over *source.LimitError
	if errors.As(err, &over) {
		return controller.Permanent(err)
	}
	return err
}

// recordOf starts d's record: its revision, its trigger, phase and start.
func recordOf(d controller.Deployment, phase history.Phase, started time.Time) history.Record {
	rev := d.Revision
	return history.Record{
		Commit:  history.Commit{SHA: rev.Commit, Message: rev.Message, Author: rev.Author, Time: rev.Time, Parents: rev.Parents, Root: rev.Root},
		Tree:    rev.Tree,
		Trigger: string(d.Trigger),
		Started: started,
		Phase:   phase,
	}
}

// note says what is unusual about a deployment, for its record.
func note(d controller.Deployment) string {
	if d.GitHubDeploymentID == 0 {
		return d.Note
	}
	n := fmt.Sprintf("from GitHub deployment %d", d.GitHubDeploymentID)
	if d.Ref != "" && d.Ref != d.Repo.Branch && d.Ref != d.Revision.Commit {
		n += fmt.Sprintf(" of %s, not the configured branch %s", d.Ref, d.Repo.Branch)
	}
	return n
}

// startWait waits for the rollout in its own goroutine and records the outcome.
func (r *Runner) startWait(repo config.Repo, rec history.Record, targets []rollout.Target, gh int64) {
	ctx, cancel := context.WithCancelCause(context.Background())
	w := &wait{cancel: cancel, done: make(chan struct{})}
	r.mu.Lock()
	r.waiting[repo.Key()] = w
	r.mu.Unlock()
	r.wg.Go(func() {
		defer close(w.done)
		defer cancel(nil)
		defer r.survive(repo, rec)
		res, err := r.waitSafely(ctx, targets, repo.Timeout)
		if errors.Is(context.Cause(ctx), errStopped) {
			r.markStopped(repo, rec)
			return
		}
		rec = rec.Clone() // readers of the notified record must not see it change
		for i, s := range res.Objects {
			if i < len(targets) {
				setStatus(rec.Objects, targets[i].Ref.String(), s)
			}
		}
		switch {
		case err != nil:
			rec.Phase, rec.Error = history.Error, "waiting for the rollout: "+err.Error()
		case res.Outcome == rollout.Succeeded:
			rec.Phase = history.Succeeded
		case res.Outcome == rollout.FailedRollout:
			rec.Phase, rec.Error = history.Failed, res.Message
		default:
			rec.Phase, rec.Error = history.Superseded, context.Cause(ctx).Error()
		}
		rec.Ended = time.Now().UTC()
		r.save(Event{Repo: repo, Record: rec, GitHubDeploymentID: gh, Stack: stackOf(err)})
		r.mu.Lock()
		if r.waiting[repo.Key()] == w {
			delete(r.waiting, repo.Key())
		}
		r.mu.Unlock()
	})
}

// waitSafely is the waiter's Wait behind a recover: this goroutine is the deployment's
// own, and a panic in it would end deployd.
func (r *Runner) waitSafely(ctx context.Context, targets []rollout.Target, timeout time.Duration) (res rollout.WaitResult, err error) {
	defer panics.Recover(&err)
	return r.waiter.Wait(ctx, targets, timeout), nil
}

// survive, deferred by the wait's goroutine, keeps a panic after the wait (in recording
// or telling of the outcome) from ending deployd: the record is stored as an error,
// without telling anyone (the telling may be what panicked).
func (r *Runner) survive(repo config.Repo, rec history.Record) {
	v := recover()
	if v == nil {
		return
	}
	err := panics.New(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec = rec.Clone()
	rec.Phase, rec.Error, rec.Ended = history.Error, "recording the rollout's outcome: "+err.Error(), time.Now().UTC()
	_ = r.history.Update(ctx, repo, rec)
}

// markStopped stores, unfinished, a record whose wait deployd's shutdown ended, marked
// stopped: the next start redoes it without counting a crash. A failed write is let be:
// the redo then counts one, as after a kill.
func (r *Runner) markStopped(repo config.Repo, rec history.Record) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec = rec.Clone()
	rec.Stopped = true
	_ = r.history.Update(ctx, repo, rec)
}

// supersede ends the wait of an earlier deployment of key, and waits until it is recorded.
func (r *Runner) supersede(key config.Key) {
	r.mu.Lock()
	w := r.waiting[key]
	r.mu.Unlock()
	if w != nil {
		w.cancel(errSuperseded)
		<-w.done
	}
}

// save writes e's record, bounded in time (the wait's own context may be gone), and
// tells of it.
func (r *Runner) save(e Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.history.Update(ctx, e.Repo, e.Record); err != nil {
		e.Record.Error = joinText(e.Record.Error, "recording: "+err.Error())
		r.mu.Lock()
		r.unsaved[e.Repo.Key()] = append(r.unsaved[e.Repo.Key()], e.Record.Clone())
		r.mu.Unlock()
	}
	e.Record = e.Record.Clone()
	r.notify(e)
}

// saveUnsaved stores the ends of the repo's deployments that could not be stored when
// they ended, as they were told: a later record never sits above one still "applying".
func (r *Runner) saveUnsaved(ctx context.Context, repo config.Repo) error {
	r.mu.Lock()
	recs := r.unsaved[repo.Key()]
	delete(r.unsaved, repo.Key())
	r.mu.Unlock()
	for i, rec := range recs {
		if err := r.history.Update(ctx, repo, rec); err != nil {
			r.mu.Lock()
			r.unsaved[repo.Key()] = append(recs[i:], r.unsaved[repo.Key()]...)
			r.mu.Unlock()
			return err
		}
	}
	return nil
}

// Close ends every wait (as at shutdown: the next deployd redoes them) and waits for the records.
func (r *Runner) Close() {
	r.mu.Lock()
	for _, w := range r.waiting {
		w.cancel(errStopped)
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// Skipped records a new commit whose manifests equal the deployed ones.
func (r *Runner) Skipped(ctx context.Context, d controller.Deployment) error {
	rec := recordOf(d, history.SkippedNoChange, time.Now().UTC())
	rec.Ended = rec.Started
	rec, err := r.history.Create(ctx, d.Repo, rec)
	if err == nil {
		r.notify(Event{Repo: d.Repo, Record: rec})
	}
	return err
}

var _ controller.Refuser = (*Runner)(nil)

// Refused records a branch head that could not be fetched (over a fetch limit) as an
// error: the refusal says how much, the limit, and the flag to change.
func (r *Runner) Refused(ctx context.Context, d controller.Deployment, refusal error) error {
	now := time.Now().UTC()
	rec, err := r.history.Create(ctx, d.Repo, history.Record{
		Commit:  history.Commit{SHA: d.Revision.Commit},
		Trigger: string(d.Trigger),
		Started: now, Ended: now,
		Phase: history.Error,
		Error: refusal.Error(),
	})
	if err == nil {
		r.notify(Event{Repo: d.Repo, Record: rec})
	}
	return err
}

// Recovery is what the history says about a repo after a restart.
type Recovery struct {
	// DeployedTree is the manifests tree of the last successful deployment.
	DeployedTree string
	// Interrupted is true when a deployment was cut off (deployd was killed or stopped
	// mid-deployment); it is now marked "error: interrupted" and should be redone.
	Interrupted bool
	// CrashedTree is set instead when the cut-off deployment's commit was being deployed
	// the last MaxCrashes times deployd was killed: it is marked "error: crashed deployd
	// twice" and not redone; this manifests tree waits for a new one or a forced sync.
	CrashedTree string
	// Records are the kept records, newest first, after the marking.
	Records []history.Record
	// Pause is the stored pause state.
	Pause history.Pause
}

// Recover reads repo's history at start: unfinished records become "error: interrupted".
func (r *Runner) Recover(ctx context.Context, repo config.Repo) (Recovery, error) {
	recs, err := r.history.List(ctx, repo)
	if err != nil {
		return Recovery{}, err
	}
	var out Recovery
	if out.Pause, err = r.history.Pause(ctx, repo); err != nil {
		return out, err
	}
	newest := true
	for i, rec := range recs { // newest first
		if !rec.Phase.Done() {
			rec = r.interrupted(repo, rec, newest, &out)
			if err := r.history.Update(ctx, repo, rec); err != nil {
				return out, err
			}
			recs[i] = rec
			newest = false
			continue
		}
		newest = false
		if rec.Phase == history.Succeeded && out.DeployedTree == "" {
			out.DeployedTree = rec.Tree
		}
	}
	out.Records = recs
	return out, nil
}

// interrupted marks a record that deployd left unfinished as an error, and says in out
// whether to redo it: the newest one is redone unless its commit crashed deployd
// MaxCrashes times (a graceful stop does not count).
func (r *Runner) interrupted(repo config.Repo, rec history.Record, newest bool, out *Recovery) history.Record {
	rec.Error = "interrupted: deployd stopped before it ended"
	if !rec.Stopped {
		rec.Crashes++
		rec.Error = "interrupted: deployd was killed before it ended (a crash, an out-of-memory kill, or a lost node)"
	}
	crashes := rec.Crashes
	rec.Phase, rec.Ended, rec.Stopped = history.Error, time.Now().UTC(), false
	switch {
	case !newest:
	case crashes >= MaxCrashes:
		rec.Error = fmt.Sprintf("%s: deployd was killed %d times while deploying commit %s (a crash or an out-of-memory kill), so it is not redone at start: push a new commit, or sync with force to try it again",
			crashedTwice, crashes, source.ShortSHA(rec.Commit.SHA))
		out.CrashedTree = rec.Tree
	default:
		out.Interrupted = true
		r.mu.Lock()
		r.redos[repo.Key()] = redo{commit: rec.Commit.SHA, crashes: crashes}
		r.mu.Unlock()
	}
	return rec
}

// stackOf is the stack of the panic err tells of, or nil.
func stackOf(err error) []byte {
	var p *panics.Error
	if errors.As(err, &p) {
		return p.Stack
	}
	return nil
}

// joinText appends b to a, after "; " when a is not empty.
func joinText(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func objectsOf(changes []apply.Change) []history.Object {
	out := make([]history.Object, len(changes))
	for i, c := range changes {
		r := c.Object
		apiVersion := r.Version
		if r.Group != "" {
			apiVersion = r.Group + "/" + r.Version
		}
		out[i] = history.Object{Object: r.String(), APIVersion: apiVersion, Kind: r.Kind, Namespace: r.Namespace, Name: r.Name,
			Action: string(c.Action), Message: c.Reason}
	}
	return out
}

func setStatus(objs []history.Object, name string, s rollout.Tracked) {
	for i := range objs {
		if objs[i].Object == name {
			objs[i].Status, objs[i].Message = string(s.Status), s.Summary()
		}
	}
}

// Blocked records a promotion the gate refused (phase blocked): nothing is applied, what
// runs does not change. why names the difference; images are what the commit would run.
func (r *Runner) Blocked(ctx context.Context, d controller.Deployment, why string, images []string) (history.Record, error) {
	rec := recordOf(d, history.Blocked, time.Now().UTC())
	rec.Ended, rec.Error, rec.Note = rec.Started, why, note(d)
	rec.Images, rec.ImagesRecorded = images, images != nil
	rec, err := r.history.Create(ctx, d.Repo, rec)
	if err == nil {
		r.notify(Event{Repo: d.Repo, Record: rec.Clone(), GitHubDeploymentID: d.GitHubDeploymentID})
	}
	return rec, err
}
