package controller_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/panics"
	"github.com/deployd/deployd/internal/source"
)

// panicsFor panics in Check or Deploy for one repo and passes the others on.
type panicsFor struct {
	controller.Checker
	controller.Deployer
	repo          string
	check, deploy bool
}

func (p panicsFor) Check(ctx context.Context, repo config.Repo) (source.Result, error) {
	if p.check && repo.Name == p.repo {
		panic(errors.New("checking " + repo.Name))
	}
	return p.Checker.Check(ctx, repo)
}

func (p panicsFor) Deploy(ctx context.Context, d controller.Deployment) error {
	if p.deploy && d.Repo.Name == p.repo {
		panic("deploying " + d.Repo.Name)
	}
	return p.Deployer.Deploy(ctx, d)
}

// TestPanicsFailOneRepo makes checking or deploying one repo panic: its outcome tells of
// the panic (a check is retried, a deployment is failed for good), and the other repo
// still deploys its new commits.
func TestPanicsFailOneRepo(t *testing.T) {
	tests := []struct {
		name          string
		check, deploy bool
		action        controller.Action
		permanent     bool
	}{
		{"in the check", true, false, controller.ActionCheckFailed, false},
		{"in the deployment", false, true, controller.ActionDeployFailed, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := gittest.NewServer(t)
			good, bad := srv.NewRepo(t, "a/good"), srv.NewRepo(t, "a/bad")
			good.Commit("main", "one", manifests)
			bad.Commit("main", "one", manifests)
			sopts := source.DefaultOptions()
			sopts.CacheDir, sopts.Timeout = t.TempDir(), 5*time.Second
			rec := newRecorder()
			p := panicsFor{Checker: source.New(sopts), Deployer: rec, repo: "a/bad", check: tt.check, deploy: tt.deploy}
			ctl := controller.New(p, p, controller.Options{Concurrency: 2, BackoffBase: 50 * time.Millisecond, BackoffMax: time.Second, Observe: rec.observe})
			runConfig(t, ctl, "repos:\n"+repoLine("a/good", srv.RepoURL("a/good"), ", interval: 200ms")+repoLine("a/bad", srv.RepoURL("a/bad"), ", interval: 200ms"))
			rec.waitFor(t, 10*time.Second, "the panic told as an outcome", func(_ []controller.Deployment, os []controller.Outcome) bool {
				for _, o := range os {
					var pe *panics.Error
					var perm *controller.PermanentError
					if o.Key.Name == "a/bad" && o.Action == tt.action && errors.As(o.Err, &pe) && errors.As(o.Err, &perm) == tt.permanent {
						return strings.HasPrefix(pe.Error(), "deployd panicked: ")
					}
				}
				return false
			})
			second := good.Commit("main", "two", map[string]string{"deploy/manifests/cm.yaml": "kind: ConfigMap\ndata: {v: '2'}\n"})
			rec.waitFor(t, 10*time.Second, "the other repo deploys on", deployedCommit("a/good", second))
		})
	}
}

// runConfig sets the config and runs ctl until the test ends.
func runConfig(t *testing.T, ctl *controller.Controller, reposYAML string) {
	t.Helper()
	cfg, err := config.Parse("repos.yaml", []byte(reposYAML), config.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	ctl.SetConfig(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ctl.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}
