package controller_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/source"
)

// refusals records the refusals it is told of, and deploys through a recorder.
type refusals struct {
	*recorder
	mu   sync.Mutex
	told []string
}

func (r *refusals) Refused(_ context.Context, d controller.Deployment, err error) error {
	var over *source.FetchLimitError
	if !errors.As(err, &over) {
		return errors.New("not a refusal")
	}
	r.mu.Lock()
	r.told = append(r.told, d.Revision.Commit)
	r.mu.Unlock()
	return nil
}

// TestRefusedHeadIsToldOnce polls a repo whose head holds an object over the limit: every
// poll says refused, the deployer is told once for the commit, nothing is retried with
// backoff, and the next commit without it deploys.
func TestRefusedHeadIsToldOnce(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "a/app")
	files := map[string]string{"assets/big.bin": strings.Repeat("0", 2<<20)}
	for k, v := range manifests {
		files[k] = v
	}
	big := repo.Commit("main", "big", files)
	sopts := source.DefaultOptions()
	sopts.CacheDir, sopts.Timeout, sopts.MaxObjectBytes = t.TempDir(), 5*time.Second, 1<<20
	r := &refusals{recorder: newRecorder()}
	ctl := controller.New(source.New(sopts), r, controller.Options{Concurrency: 1, BackoffBase: time.Second, BackoffMax: time.Second, Observe: r.observe})
	runConfig(t, ctl, "repos:\n"+repoLine("a/app", srv.RepoURL("a/app"), ", interval: 100ms"))
	r.waitFor(t, 10*time.Second, "three refused polls", func(_ []controller.Deployment, os []controller.Outcome) bool {
		n := 0
		for _, o := range os {
			if o.Action == controller.ActionRefused && o.Result.Commit == big && o.RetryIn == 0 {
				n++
			}
		}
		return n >= 3
	})
	r.mu.Lock()
	told := append([]string(nil), r.told...)
	r.mu.Unlock()
	if len(told) != 1 || told[0] != big {
		t.Errorf("told of %v, want once of %s", told, big)
	}
	fixed := repo.Commit("main", "no big file", map[string]string{"assets/big.bin": ""})
	r.waitFor(t, 10*time.Second, "the fixed commit deployed", deployedCommit("a/app", fixed))
}
