// Package tag pushes an annotated git tag (deployment-0007) on the commit of each
// deployment that ended, saying "Successfully Deployed" or "Failed Deployment", for the
// repos that ask for it. It works in the background with bounded retries: tagging never
// delays or fails a deployment, and its failures are told, not raised.
package tag

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/source"
)

// Pusher pushes a tag to a repo's remote (source.Source does).
type Pusher interface {
	PushTag(ctx context.Context, repo config.Repo, tag source.Tag) error
}

var _ Pusher = (*source.Source)(nil)

// The states of a deployment's tag.
const (
	// Pending: not pushed yet, being tried (Error says why the last attempt failed).
	Pending = "pending"
	// Pushed: the remote has the tag.
	Pushed = "pushed"
	// Failed: given up on (Error says why).
	Failed = "failed"
)

// Status is where a deployment's tag is: its State is Pending, Pushed or Failed.
type Status = history.Tag

// Options configure a Tagger.
type Options struct {
	// PublicURL is deployd's base URL, for the record's link in the message; without it
	// the link is the API path alone.
	PublicURL string
	// BackoffBase is the wait after the first failed attempt, doubled after each next
	// one up to BackoffMax.
	BackoffBase, BackoffMax time.Duration
	// MaxAttempts bounds the pushes tried per tag.
	MaxAttempts int
	// MaxPending bounds the tags waiting or being pushed at once; a tag past it is not
	// pushed (Failed), so a git server that is away holds a bounded number of goroutines.
	MaxPending int
	// Parallel bounds the pushes in flight at once.
	Parallel int
	// Several reports whether a repo is configured in more than one environment: its
	// tags are then prefixed with the environment.
	Several func(repo config.Repo) bool
	// Changed, when set, is told each change of a tag's status, from the tagger's own
	// goroutines (never from Record: it may write the status somewhere slow).
	Changed func(repo config.Repo, number int, st Status)
	// Dropped, when set, is told (from Record) of a tag not pushed because MaxPending
	// tags were pending.
	Dropped func(repo config.Repo, number int, st Status)
	// Attempted, when set, is told each attempt's outcome (nil error: pushed).
	Attempted func(err error)
}

// DefaultOptions retry a push 8 times over about 3 minutes (1s doubling to 1m), with up
// to 1,000 tags pending and 4 pushes at once.
func DefaultOptions() Options {
	return Options{BackoffBase: time.Second, BackoffMax: time.Minute, MaxAttempts: 8, MaxPending: 1000, Parallel: 4}
}

// Tagger pushes deployments' tags.
type Tagger struct {
	push Pusher
	opts Options
	sem  chan struct{}

	mu      sync.Mutex
	ctx     context.Context
	pending int
	// last is the newest record number taken per repo: a record told twice is tagged once.
	last map[config.Key]int
	wg   sync.WaitGroup
}

// New returns a Tagger pushing with push; call Start before use.
func New(push Pusher, opts Options) *Tagger {
	return &Tagger{push: push, opts: opts, sem: make(chan struct{}, max(opts.Parallel, 1)), last: map[config.Key]int{}, ctx: context.Background()}
}

// Start lets tags be pushed until ctx ends: a tag waiting for its next attempt then
// stays as it is.
func (t *Tagger) Start(ctx context.Context) {
	t.mu.Lock()
	t.ctx = ctx
	t.mu.Unlock()
}

// Wait waits until every tag taken was pushed or given up on (tests, shutdown).
func (t *Tagger) Wait() { t.wg.Wait() }

// Tagged reports whether a record in phase is tagged: the ones that deployed something
// and ended. Superseded records are not (the newer deployment's tag tells), nor skipped
// ones (nothing was deployed), nor unfinished ones.
func Tagged(phase history.Phase) bool {
	switch phase {
	case history.Succeeded, history.Failed, history.Error:
		return true
	}
	return false
}

// Record takes a record's change, and tags it in the background once it ended, when the
// repo asks for tags. It never blocks.
func (t *Tagger) Record(repo config.Repo, rec history.Record) {
	if !repo.TagDeployments || !Tagged(rec.Phase) || rec.Commit.SHA == "" {
		return
	}
	tag := t.tagOf(repo, rec)
	t.mu.Lock()
	if t.last[repo.Key()] >= rec.Number {
		t.mu.Unlock()
		return
	}
	t.last[repo.Key()] = rec.Number
	full := t.pending >= t.opts.MaxPending
	if !full {
		t.pending++
	}
	ctx := t.ctx
	t.mu.Unlock()
	if full {
		if t.opts.Dropped != nil {
			t.opts.Dropped(repo, rec.Number, Status{Name: tag.Name, State: Failed,
				Error: fmt.Sprintf("not pushed: %d tags are already waiting for their git servers", t.opts.MaxPending)})
		}
		return
	}
	t.wg.Go(func() {
		defer func() {
			t.mu.Lock()
			t.pending--
			t.mu.Unlock()
		}()
		t.run(ctx, repo, rec.Number, tag)
	})
}

// run pushes tag until it is pushed, refused for good, out of attempts, or ctx ends.
func (t *Tagger) run(ctx context.Context, repo config.Repo, number int, tag source.Tag) {
	st := Status{Name: tag.Name, State: Pending}
	t.changed(repo, number, st)
	delay := t.opts.BackoffBase
	for st.Attempts < max(t.opts.MaxAttempts, 1) {
		err := t.attempt(ctx, repo, tag)
		if ctx.Err() != nil {
			return
		}
		st.Attempts++
		if t.opts.Attempted != nil {
			t.opts.Attempted(err)
		}
		if err == nil {
			st.State, st.Error = Pushed, ""
			t.changed(repo, number, st)
			return
		}
		st.Error = err.Error()
		var conflict *source.TagConflictError
		if errors.As(err, &conflict) || st.Attempts >= t.opts.MaxAttempts {
			st.State = Failed
			t.changed(repo, number, st)
			return
		}
		t.changed(repo, number, st)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, t.opts.BackoffMax)
	}
}

// attempt pushes once, holding one of the Parallel slots.
func (t *Tagger) attempt(ctx context.Context, repo config.Repo, tag source.Tag) error {
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-t.sem }()
	return t.push.PushTag(ctx, repo, tag)
}

func (t *Tagger) changed(repo config.Repo, number int, st Status) {
	if t.opts.Changed != nil {
		t.opts.Changed(repo, number, st)
	}
}

// Name is the tag's name for a record: deployment-0007, or production/deployment-0007
// when the repo is configured in several environments.
func Name(repo config.Repo, rec history.Record, several bool) string {
	if several {
		return repo.Environment + "/" + rec.Name()
	}
	return rec.Name()
}

// tagOf builds the tag of an ended record. Its tagger time is the record's end, so the
// same record always makes the same tag object.
func (t *Tagger) tagOf(repo config.Repo, rec history.Record) source.Tag {
	several := t.opts.Several != nil && t.opts.Several(repo)
	when := rec.Ended
	if when.IsZero() {
		when = rec.Started
	}
	return source.Tag{
		Name:    Name(repo, rec, several),
		Commit:  rec.Commit.SHA,
		Message: Message(repo, rec, t.opts.PublicURL),
		Tagger:  object.Signature{Name: "deployd", Email: "deployd@localhost", When: when.UTC()},
	}
}

// maxObjects and maxErrorBytes bound a tag's message: a deployment may have 1,000 objects.
const (
	maxObjects    = 100
	maxErrorBytes = 2000
)

// Message is a tag's message: "Successfully Deployed" or "Failed Deployment", then the
// record's link, phase, times, error and objects.
func Message(repo config.Repo, rec history.Record, publicURL string) string {
	var b strings.Builder
	if rec.Phase == history.Succeeded {
		b.WriteString("Successfully Deployed\n\n")
	} else {
		b.WriteString("Failed Deployment\n\n")
	}
	fmt.Fprintf(&b, "Deployment: %s of %s in %s\n", rec.Name(), repo.Name, repo.Environment)
	fmt.Fprintf(&b, "Link: %s\n", Link(repo, rec.Number, publicURL))
	fmt.Fprintf(&b, "Phase: %s\n", rec.Phase)
	fmt.Fprintf(&b, "Started: %s\n", rec.Started.UTC().Format(time.RFC3339))
	if !rec.Ended.IsZero() {
		fmt.Fprintf(&b, "Ended: %s\n", rec.Ended.UTC().Format(time.RFC3339))
	}
	if rec.Error != "" {
		msg := rec.Error
		if len(msg) > maxErrorBytes {
			msg = msg[:maxErrorBytes] + "…"
		}
		fmt.Fprintf(&b, "Error: %s\n", strings.ReplaceAll(msg, "\n", "\n  "))
	}
	if len(rec.Objects) > 0 {
		b.WriteString("Objects:\n")
	}
	for i, o := range rec.Objects {
		if i == maxObjects {
			fmt.Fprintf(&b, "  … and %d more\n", len(rec.Objects)-maxObjects)
			break
		}
		fmt.Fprintf(&b, "  %s: %s", o.Object, o.Action)
		if o.Status != "" {
			fmt.Fprintf(&b, ", %s", o.Status)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Link is the API address of a record.
func Link(repo config.Repo, number int, publicURL string) string {
	return fmt.Sprintf("%s/deployment/%s/history/%d?environment=%s", strings.TrimSuffix(publicURL, "/"), repo.Name, number, url.QueryEscape(repo.Environment))
}
