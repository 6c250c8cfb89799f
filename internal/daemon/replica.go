package daemon

import (
	"context"
	"log/slog"

	corev1 "k8s.io/api/core/v1"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/leader"
	"github.com/deployd/deployd/internal/view"
)

// replica is this replica's side of the leader.Router: its work queue, state cache and
// view.
type replica struct {
	*parts
	log *slog.Logger
}

var _ leader.Replica = replica{}

func (r replica) Enqueue(ctx context.Context, key config.Key, req controller.Request) error {
	return controller.Local(r.ctl).Enqueue(ctx, key, req)
}

func (r replica) Observe(cm *corev1.ConfigMap) bool { return r.states.Observe(cm) }

func (r replica) ObserveDeleted(name string) { r.states.ObserveDeleted(name) }

func (r replica) Preload(ctx context.Context, cfg *config.Config) error { return r.preload(ctx, cfg) }

func (r replica) Recover(ctx context.Context, cfg *config.Config) []config.Key {
	return r.recoverHistory(ctx, r.ctl, cfg, r.log)
}

// FollowPause applies a pause state stored by another replica.
func (r replica) FollowPause(ctx context.Context, repo config.Repo) {
	pause, err := r.store.Pause(ctx, repo)
	if err != nil {
		r.log.Warn("could not read a pause state another replica stored; it applies at its next change", "repo", repo.Name, "env", repo.Environment, "err", err)
		return
	}
	e, ok := r.view.Entry(repo.Key())
	if !ok || (pause.Paused == e.Pause.Paused && pause.Reason == e.Pause.Reason) {
		return
	}
	r.ctl.SetPaused(repo.Key(), pause.Paused)
	r.view.SetPause(repo.Key(), view.Pause(pause))
	r.log.Info("pause state changed through another replica", "repo", repo.Name, "env", repo.Environment, "paused", pause.Paused)
}

// Show puts a repo's stored history and pause state in the view, on a follower, and
// watches the objects of a newly deployed record.
func (r replica) Show(ctx context.Context, repo config.Repo) {
	recs, err := r.store.List(ctx, repo)
	if err != nil {
		r.log.Warn("could not read the repo's history", "repo", repo.Name, "env", repo.Environment, "err", err)
		return
	}
	pause, err := r.store.Pause(ctx, repo)
	if err != nil {
		r.log.Warn("could not read the repo's pause state", "repo", repo.Name, "env", repo.Environment, "err", err)
		return
	}
	key := repo.Key()
	r.view.LoadHistory(key, recs)
	r.view.SetPause(key, view.Pause(pause))
	e, ok := r.view.Entry(key)
	if !ok {
		return
	}
	dep, ok := e.Deployed()
	if !ok {
		return
	}
	if r.shown(key, dep.Number) {
		r.watchDeployed(repo, r.log)
	}
}
