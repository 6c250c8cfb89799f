package daemon

import (
	"context"
	"log/slog"

	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/webhook"
)

// logDeployer stands in for apply until it lands (issue 4): it says what would be
// applied, and succeeds, so the source side can be run and watched on its own.
func logDeployer(log *slog.Logger) controller.Deployer {
	return controller.DeployFunc(func(ctx context.Context, d controller.Deployment) error {
		log.Warn("manifests changed; applying them is not built yet (issue 4), so the cluster was not touched",
			"repo", d.Repo.Name, "env", d.Repo.Environment, "namespace", d.Repo.Namespace,
			"commit", d.Revision.Commit, "tree", d.Revision.Tree, "trigger", string(d.Trigger))
		return nil
	})
}

func logOutcome(log *slog.Logger, o controller.Outcome) {
	attrs := []any{"repo", o.Key.Name, "env", o.Key.Environment, "trigger", string(o.Request.Trigger),
		"action", string(o.Action), "duration", o.Duration.String()}
	if o.Result.Commit != "" {
		attrs = append(attrs, "commit", o.Result.Commit)
	}
	if o.Result.Recloned != "" {
		log.Warn("git cache was re-cloned", "repo", o.Key.Name, "env", o.Key.Environment, "reason", o.Result.Recloned)
	}
	switch {
	case o.Err != nil:
		log.Error("repo check failed", append(attrs, "err", o.Err, "retry_in", o.RetryIn.String())...)
	case o.Action == controller.ActionUpToDate:
		log.Debug("repo checked", attrs...)
	default:
		log.Info("repo checked", attrs...)
	}
}

func logDelivery(log *slog.Logger, r webhook.Result) {
	queued := make([]string, len(r.Queued))
	for i, k := range r.Queued {
		queued[i] = k.String()
	}
	log.Info("webhook delivery", "event", r.Event, "delivery", r.Delivery, "status", r.Status, "message", r.Message, "queued", queued)
}
