package rollout

import (
	"context"
	"fmt"
	"time"

	"github.com/deployd/deployd/internal/apply"
)

// Outcome is how a wait ended.
type Outcome string

// The outcomes.
const (
	Succeeded Outcome = "succeeded"
	// FailedRollout: an object Failed or the timeout passed.
	FailedRollout Outcome = "failed"
	// Cancelled: the caller gave up (a newer commit superseded the wait).
	Cancelled Outcome = "cancelled"
)

// WaitResult is the end of a wait.
type WaitResult struct {
	Outcome Outcome
	// Message says what failed, e.g. "Deployment web: ProgressDeadlineExceeded".
	Message string
	// Objects are the final statuses, in refs' order.
	Objects []Tracked
}

// Target is an applied object and the generation the apply gave it.
type Target struct {
	apply.Ref
	// Generation is the generation the watch must have seen before the status counts.
	Generation int64
}

// TargetsOf returns the applied (not pruned) objects of an apply's changes.
func TargetsOf(changes []apply.Change) []Target {
	var out []Target
	for _, c := range changes {
		switch c.Action {
		case apply.Created, apply.Configured, apply.Unchanged, apply.Recreated:
			out = append(out, Target{Ref: c.Object, Generation: c.Generation})
		}
	}
	return out
}

// Wait waits until every target is Current (Succeeded), any is Failed, or timeout passes.
// It wakes on watch events, not on a timer, and holds no other resource.
func (t *Tracker) Wait(ctx context.Context, targets []Target, timeout time.Duration) WaitResult {
	refs := make([]apply.Ref, len(targets))
	for i, tg := range targets {
		refs[i] = tg.Ref
	}
	if err := t.Watch(ctx, refs); err != nil {
		if ctx.Err() != nil {
			return WaitResult{Outcome: Cancelled, Message: ctx.Err().Error()}
		}
		return WaitResult{Outcome: FailedRollout, Message: err.Error()}
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		changed := t.Changed()
		res, done := t.evaluate(targets)
		if done {
			return res
		}
		select {
		case <-changed:
		case <-ctx.Done():
			res.Outcome, res.Message = Cancelled, ctx.Err().Error()
			return res
		case <-deadline.C:
			res, _ = t.evaluate(targets)
			res.Outcome = FailedRollout
			res.Message = fmt.Sprintf("timed out after %s waiting for %s", timeout, res.Message)
			return res
		}
	}
}

// evaluate returns the statuses; done when all are Current or one Failed. Message names
// the first object holding the rollout back.
func (t *Tracker) evaluate(targets []Target) (WaitResult, bool) {
	res := WaitResult{Outcome: Succeeded, Objects: make([]Tracked, len(targets))}
	pending := ""
	for i, tg := range targets {
		r := tg.Ref
		s := t.Get(r)
		res.Objects[i] = s
		switch {
		case s.Generation < tg.Generation && pending == "":
			pending = fmt.Sprintf("%s %s: generation %d not observed yet", r.Kind, r.Name, tg.Generation)
		case s.Generation < tg.Generation:
		case s.Status == Failed:
			res.Outcome, res.Message = FailedRollout, fmt.Sprintf("%s %s: %s", r.Kind, r.Name, s.Summary())
			return res, true
		case s.Status != Current && pending == "":
			pending = fmt.Sprintf("%s %s: %s", r.Kind, r.Name, s.Summary())
		}
	}
	if pending != "" {
		res.Message = pending
		return res, false
	}
	return res, true
}
