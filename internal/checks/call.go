package checks

import (
	"context"
	"fmt"
	"time"

	"github.com/google/go-github/v60/github"

	"github.com/deployd/deployd/internal/report"
)

// call makes one GitHub request, each attempt with its own timeout, trying again after
// the failures internal/report retries (5xx, rate limits, network errors). what names
// the request in the error.
func (p *Publisher) call(ctx context.Context, what string, do func(ctx context.Context) (*github.Response, error)) error {
	delay := p.opts.BackoffBase
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, p.opts.CallTimeout)
		resp, err := do(actx)
		cancel()
		if p.onResponse != nil && resp != nil && resp.Response != nil {
			p.onResponse(resp.StatusCode)
		}
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !report.Transient(err) || attempt >= p.opts.Attempts {
			return fmt.Errorf("%s: %w", what, err)
		}
		wait := report.RetryAfter(err, delay)
		if wait > p.opts.MaxWait {
			return fmt.Errorf("%s: GitHub asks to wait %s: %w", what, wait.Round(time.Second), err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w (after %v)", what, ctx.Err(), err)
		case <-t.C:
		}
		delay = min(delay*2, p.opts.BackoffMax)
	}
}
