package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/render"
	"github.com/deployd/deployd/internal/source"
)

// deployer renders a revision's manifests from the git cache and applies them.
type deployer struct {
	source  *source.Source
	applier *apply.Applier
	log     *slog.Logger
}

var _ controller.Deployer = (*deployer)(nil)

// Deploy fails permanently (no retry of the same revision) on bad manifests and on
// objects the API server rejects; other failures are retried with backoff.
func (d *deployer) Deploy(ctx context.Context, dep controller.Deployment) error {
	repo, rev := dep.Repo, dep.Revision
	files, err := d.source.Files(repo, rev.Commit, repo.ManifestPath(), source.DefaultLimits())
	if err != nil {
		return err
	}
	if render.IsKustomization(files, repo.ManifestPath()) {
		// An overlay may reach ../base anywhere in the repo.
		if files, err = d.source.Files(repo, rev.Commit, ".", source.DefaultLimits()); err != nil {
			return controller.Permanent(err)
		}
	}
	objs, err := render.Render(files, repo.ManifestPath())
	if err != nil {
		return controller.Permanent(fmt.Errorf("rendering %s at %s: %w", repo.ManifestPath(), short(rev.Commit), err))
	}
	res, err := d.applier.Apply(ctx, apply.Request{Repo: repo, Commit: rev.Commit, Objects: objs})
	counts := map[apply.Action]int{}
	for _, c := range res.Changes {
		counts[c.Action]++
		d.log.Debug("object", "repo", repo.Name, "env", repo.Environment, "object", c.Object.String(), "action", string(c.Action), "reason", c.Reason)
	}
	var invalid *apply.ValidationError
	if errors.As(err, &invalid) {
		return controller.Permanent(fmt.Errorf("applying %s: %w", short(rev.Commit), err))
	}
	if err != nil {
		return fmt.Errorf("applying %s: %w", short(rev.Commit), err)
	}
	d.log.Info("applied", "repo", repo.Name, "env", repo.Environment, "namespace", repo.Namespace, "commit", rev.Commit,
		"objects", len(objs), "created", counts[apply.Created], "configured", counts[apply.Configured],
		"unchanged", counts[apply.Unchanged], "recreated", counts[apply.Recreated], "pruned", counts[apply.Pruned],
		"prune_skipped", counts[apply.PruneSkipped])
	return nil
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
