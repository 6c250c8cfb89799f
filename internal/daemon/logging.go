package daemon

import (
	"log/slog"

	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/webhook"
)

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
	case o.Err != nil && o.Action == controller.ActionDeployFailed && o.RetryIn == 0:
		log.Error("deploy failed; not retried until a new commit or a forced sync", append(attrs, "err", o.Err)...)
	case o.Err != nil && o.Action == controller.ActionDeployFailed:
		log.Error("deploy failed", append(attrs, "err", o.Err, "retry_in", o.RetryIn.String())...)
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
