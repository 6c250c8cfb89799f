package daemon

import (
	"errors"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/deploy"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/panics"
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
	if p := (*panics.Error)(nil); errors.As(o.Err, &p) {
		log.Debug("panic caught", append(attrs, "err", o.Err, "stack", string(p.Stack))...)
	}
	switch {
	case o.Action == controller.ActionHeld:
		log.Info("not deployed: held by the promotion gate", append(attrs, "reason", o.Err.Error())...)
	case o.Err != nil && o.Action == controller.ActionDeployFailed && o.RetryIn == 0:
		log.Error("deploy failed; not retried until a new commit or a forced sync", append(attrs, "err", o.Err)...)
	case o.Err != nil && o.Action == controller.ActionRefused:
		log.Error("commit refused: over a git fetch limit; not fetched again until the branch moves", append(attrs, "err", o.Err)...)
	case o.Err != nil && o.Action == controller.ActionDeployFailed:
		log.Error("deploy failed", append(attrs, "err", o.Err, "retry_in", o.RetryIn.String())...)
	case o.Err != nil && unreachable(o.Err) && o.Failures > 1:
		log.Debug("repo check failed: git host still unreachable", append(attrs, "err", o.Err, "retry_in", o.RetryIn.String())...)
	case o.Err != nil && unreachable(o.Err):
		// A cluster without internet access (k8s/'s sample repos on GitHub): say it once
		// per repo, then back off quietly; the status API shows the reason meanwhile.
		log.Warn("repo check failed: its git host cannot be reached; retrying with backoff, quietly until it succeeds (the status API's checkError says why)",
			append(attrs, "err", o.Err, "retry_in", o.RetryIn.String())...)
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

func logEvent(log *slog.Logger, e deploy.Event) {
	r := e.Record
	attrs := []any{"repo", e.Repo.Name, "env", e.Repo.Environment, "deployment", r.Name(), "commit", r.Commit.SHA,
		"phase", string(r.Phase), "trigger", r.Trigger}
	if b := e.Rebuilt; b != nil {
		log.Warn("the repo's inventory was missing (state ConfigMap deleted?); rebuilt it from live objects labelled for it",
			"repo", e.Repo.Name, "env", e.Repo.Environment, "deployment", r.Name(),
			"objects", b.Objects, "last_commit", b.Commit, "unlisted_types", b.Unlisted)
	}
	if len(e.Stack) > 0 {
		log.Debug("panic caught", append(attrs, "err", r.Error, "stack", string(e.Stack))...)
	}
	switch r.Phase {
	case history.Failed, history.Error:
		log.Error("deployment", append(attrs, "err", r.Error)...)
	case history.Succeeded:
		log.Info("deployment", append(attrs, "duration", r.Ended.Sub(r.Started).Round(time.Millisecond).String(), "objects", len(r.Objects))...)
	default:
		log.Info("deployment", attrs...)
	}
}

// unreachable tells a failure to resolve or connect to a host (no network, no DNS, a
// firewall) from one the repo or its server caused.
func unreachable(err error) bool {
	var dns *net.DNSError
	var op *net.OpError
	if errors.As(err, &dns) || errors.As(err, &op) && op.Op == "dial" ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	// go-git's HTTP transport keeps only the text of some errors.
	msg := err.Error()
	for _, s := range []string{"no such host", "server misbehaving", "connection refused", "network is unreachable", "no route to host", "dial tcp"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
