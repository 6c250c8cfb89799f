package controller_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/source"
)

// holding holds every deployment back (a promotion gate waiting) until release is set.
type holding struct {
	*recorder
	release atomic.Bool
}

func (h *holding) Deploy(ctx context.Context, d controller.Deployment) error {
	if !h.release.Load() {
		return controller.Held("waiting for staging")
	}
	return h.recorder.Deploy(ctx, d)
}

// TestHeldIsAskedAgain: a revision held back is neither retried with backoff nor taken as
// deployed or failed: every poll asks again, and once let through it deploys.
func TestHeldIsAskedAgain(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "a/app")
	head := repo.Commit("main", "one", manifests)
	sopts := source.DefaultOptions()
	sopts.CacheDir, sopts.Timeout = t.TempDir(), 5*time.Second
	h := &holding{recorder: newRecorder()}
	ctl := controller.New(source.New(sopts), h, controller.Options{Concurrency: 1, BackoffBase: time.Hour, BackoffMax: time.Hour, Observe: h.observe})
	runConfig(t, ctl, "repos:\n"+repoLine("a/app", srv.RepoURL("a/app"), ", interval: 100ms"))
	h.waitFor(t, 10*time.Second, "three held polls", func(_ []controller.Deployment, os []controller.Outcome) bool {
		n := 0
		for _, o := range os {
			if o.Action == controller.ActionHeld && o.Result.Commit == head && o.RetryIn == 0 && o.Err != nil && o.Err.Error() == "waiting for staging" {
				n++
			}
		}
		return n >= 3
	})
	h.release.Store(true)
	h.waitFor(t, 10*time.Second, "deployed once let through", deployedCommit("a/app", head))
}
