// Package promote gates the deployments of a repo entry with promoteFrom: a commit is
// deployed there only after it succeeded in the source environment, and only when the
// images it renders to are exactly those that ran there. The source is this deployd's
// history, or, for another cluster's deployd, GitHub's deployment statuses.
package promote

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/render"
	"github.com/deployd/deployd/internal/source"
	"github.com/deployd/deployd/internal/view"
)

// Runner renders a commit's objects and records refused promotions (deploy.Runner does).
type Runner interface {
	Objects(ctx context.Context, repo config.Repo, commit string) ([]render.Object, error)
	Blocked(ctx context.Context, d controller.Deployment, why string, images []string) (history.Record, error)
}

// Board shows, per entry, the commit waiting to be promoted (view.View does).
type Board interface {
	SetPromotion(key config.Key, p view.Promotion)
}

// Gate is the controller's Deployer in front of the runner: entries without promoteFrom
// pass through untouched.
type Gate struct {
	next    controller.Deployer
	runner  Runner
	records Records
	ledger  Ledger // nil when GitHub reporting is off
	config  func() *config.Config
	board   Board

	mu      sync.Mutex
	waiting map[config.Key]view.Promotion
	// blocked is the last refusal recorded per entry (commit and why), so a poll or an
	// automatic promotion does not record the same refusal again and again.
	blocked map[config.Key]string
}

var _ controller.Deployer = (*Gate)(nil)

// New returns a gate in front of next. ledger may be nil (no remote sources then).
func New(next controller.Deployer, runner Runner, records Records, ledger Ledger, cfg func() *config.Config, board Board) *Gate {
	return &Gate{next: next, runner: runner, records: records, ledger: ledger, config: cfg, board: board,
		waiting: map[config.Key]view.Promotion{}, blocked: map[config.Key]string{}}
}

// Deploy deploys d when its entry does not promote, when it re-applies what the entry
// already runs (drift, rollback), or when the gate lets it; otherwise it records why not
// and answers controller.Held.
func (g *Gate) Deploy(ctx context.Context, d controller.Deployment) error {
	repo := d.Repo
	if !repo.Promotes() || d.Trigger == controller.TriggerDrift || d.Trigger == controller.TriggerRollback {
		return g.next.Deploy(ctx, d)
	}
	explicit := d.Trigger == controller.TriggerPromote || d.Trigger == controller.TriggerGitHubDeployment
	commit := source.ShortSHA(d.Revision.Commit)
	if d.Trigger == controller.TriggerPromoteAuto {
		running, err := g.runs(ctx, repo, d.Revision.Commit)
		if err != nil {
			return err
		}
		if running {
			return controller.Held(commit + ": already deployed here")
		}
	}
	v, err := g.verdict(ctx, repo, d.Revision.Commit)
	if err != nil {
		return err // GitHub or the cluster did not answer: retried with backoff
	}
	if !explicit && repo.Promotion == config.PromotionManual {
		reason := fmt.Sprintf("%s has not succeeded with it yet (%s)", repo.PromoteFrom, v.Detail)
		if v.State == Succeeded {
			reason = fmt.Sprintf("%s succeeded with it: waiting for a promotion request (deployd promote %s --to %s)", repo.PromoteFrom, repo.Name, repo.Environment)
		}
		g.wait(repo, d.Revision.Commit, reason, v.State == Succeeded)
		return controller.Held(commit + ": " + reason)
	}
	if !explicit && v.State == Pending {
		reason := fmt.Sprintf("waiting for %s to succeed with it (%s)", repo.PromoteFrom, v.Detail)
		g.wait(repo, d.Revision.Commit, reason, false)
		return controller.Held(commit + ": " + reason)
	}
	why, images, err := g.check(ctx, d, v)
	if err != nil {
		return err
	}
	if why != "" {
		return g.block(ctx, d, why, images, explicit)
	}
	g.done(repo.Key(), d.Revision.Commit)
	return g.next.Deploy(ctx, d)
}

// runs reports whether repo's newest deployment (blocked and skipped ones aside) is of
// commit and did not fail: the source redeploying a commit does not redeploy it here.
func (g *Gate) runs(ctx context.Context, repo config.Repo, commit string) (bool, error) {
	recs, err := g.records.List(ctx, repo)
	if err != nil {
		return false, fmt.Errorf("reading the history of %s: %w", repo.Key(), err)
	}
	for _, r := range recs {
		switch r.Phase {
		case history.Blocked, history.SkippedNoChange:
			continue
		case history.Queued, history.Applying, history.Waiting, history.Succeeded:
			return r.Commit.SHA == commit, nil
		}
		return false, nil
	}
	return false, nil
}

// verdict asks the source environment about commit: this deployd's history when it
// serves that environment, GitHub otherwise.
func (g *Gate) verdict(ctx context.Context, repo config.Repo, commit string) (Verdict, error) {
	if src, ok := g.config().PromotionSource(repo); ok {
		recs, err := g.records.List(ctx, src)
		if err != nil {
			return Verdict{}, fmt.Errorf("reading the history of %s: %w", src.Key(), err)
		}
		return localVerdict(recs, commit), nil
	}
	if g.ledger == nil {
		return Verdict{}, controller.Permanent(fmt.Errorf("%s is not served by this deployd and GitHub reporting is off: nothing can say how it did", repo.PromoteFrom))
	}
	return remoteVerdict(ctx, g.ledger, repo, commit)
}

// check says why d may not be deployed ("" when it may), with the images it would run.
func (g *Gate) check(ctx context.Context, d controller.Deployment, v Verdict) (string, []string, error) {
	repo, commit := d.Repo, source.ShortSHA(d.Revision.Commit)
	if v.State != Succeeded {
		return fmt.Sprintf("%s has not succeeded with %s: %s", repo.PromoteFrom, commit, v.Detail), nil, nil
	}
	if !v.ImagesKnown {
		return fmt.Sprintf("%s succeeded with %s, but did not record which images ran (%s; deployed by an older deployd, from a GitHub deployment deployd did not create, or over %d images): deploy it to %s again",
			repo.PromoteFrom, commit, v.Detail, render.MaxImages, repo.PromoteFrom), nil, nil
	}
	objs, err := g.runner.Objects(ctx, repo, d.Revision.Commit)
	var permanent *controller.PermanentError
	if errors.As(err, &permanent) {
		return fmt.Sprintf("%s could not be checked: %v", commit, err), nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	images, err := render.Images(objs)
	if err != nil {
		return fmt.Sprintf("%s could not be checked: %v", commit, err), nil, nil
	}
	return compare(repo.PromoteFrom, repo.Environment, v.Images, images), images, nil
}

// block records a refused promotion, once per commit and reason unless asked for
// explicitly, and answers controller.Held.
func (g *Gate) block(ctx context.Context, d controller.Deployment, why string, images []string, explicit bool) error {
	key, mark := d.Repo.Key(), d.Revision.Commit+"\x00"+why
	g.mu.Lock()
	seen := g.blocked[key] == mark
	g.mu.Unlock()
	if !seen || explicit {
		if _, err := g.runner.Blocked(ctx, d, why, images); err != nil {
			return fmt.Errorf("recording the blocked promotion: %w", err)
		}
	}
	g.mu.Lock()
	g.blocked[key] = mark
	g.mu.Unlock()
	g.done(key, d.Revision.Commit)
	return controller.Held("blocked: " + why)
}

// wait shows commit as waiting to be promoted; a commit the source succeeded with is not
// replaced by one it has not (yet).
func (g *Gate) wait(repo config.Repo, commit, reason string, ready bool) {
	key := repo.Key()
	g.mu.Lock()
	cur := g.waiting[key]
	if cur.Ready && !ready && cur.Commit != commit {
		g.mu.Unlock()
		return
	}
	p := view.Promotion{Commit: commit, Reason: reason, Ready: ready, Since: cur.Since}
	if cur.Commit != commit || p.Since.IsZero() {
		p.Since = time.Now().UTC()
	}
	g.waiting[key] = p
	g.mu.Unlock()
	g.board.SetPromotion(key, p)
}

// done clears the waiting commit once it is deployed or blocked.
func (g *Gate) done(key config.Key, commit string) {
	g.mu.Lock()
	cur, ok := g.waiting[key]
	if ok && cur.Commit == commit {
		delete(g.waiting, key)
	}
	g.mu.Unlock()
	if ok && cur.Commit == commit {
		g.board.SetPromotion(key, view.Promotion{})
	}
}

// Waiting returns the commit waiting to be promoted to key, if any.
func (g *Gate) Waiting(key config.Key) (view.Promotion, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p, ok := g.waiting[key]
	return p, ok
}

var (
	_ controller.Skipper = (*Gate)(nil)
	_ controller.Refuser = (*Gate)(nil)
)

// Skipped tells the deployer behind the gate of a commit with unchanged manifests: it
// deploys nothing, so there is nothing to gate.
func (g *Gate) Skipped(ctx context.Context, d controller.Deployment) error {
	if s, ok := g.next.(controller.Skipper); ok {
		return s.Skipped(ctx, d)
	}
	return nil
}

// Refused tells the deployer behind the gate of a branch head over a fetch limit.
func (g *Gate) Refused(ctx context.Context, d controller.Deployment, err error) error {
	if r, ok := g.next.(controller.Refuser); ok {
		return r.Refused(ctx, d, err)
	}
	return nil
}
