package preview

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/source"
)

// Options configure a Service.
type Options struct {
	// Limits bound each preview as a deployment is bounded.
	Limits Limits
	// Timeout bounds one pull request's preview, every environment together.
	Timeout time.Duration
	// DiffTimeout bounds a diff asked for through the API (under the HTTP server's
	// write timeout), the wait for the preview worker included.
	DiffTimeout time.Duration
	// MaxPerRepo and MaxTotal bound the previews kept: past either, the least recently
	// updated are forgotten (a new event of their pull request computes them again).
	MaxPerRepo, MaxTotal int
	// MaxPending bounds the pull requests waiting for a preview; past it the oldest
	// waiting one is dropped.
	MaxPending int
	// PublicURL is the base of the link to the full diff.
	PublicURL string
	// Busy, when set, tells that deployments are waiting: a preview waits for them, at
	// most MaxYield, before it starts, so previews never hold up a deployment.
	Busy     func() bool
	MaxYield time.Duration
	// Failed, when set, is told of what went wrong around a preview: publishing it,
	// dropping a waiting one.
	Failed func(repo string, number int, err error)
	// Done, when set, is told of each environment's preview once it is stored, and
	// published when there is a Publisher.
	Done func(repo string, number int, res Result)
}

// DefaultOptions: 2 minutes a preview, 25 s a diff, 20 previews kept per repo and 200
// in all, 100 waiting.
func DefaultOptions() Options {
	return Options{Limits: DefaultLimits(), Timeout: 2 * time.Minute, DiffTimeout: 25 * time.Second,
		MaxPerRepo: 20, MaxTotal: 200, MaxPending: 100, MaxYield: 30 * time.Second}
}

// PullRequest is a pull request event for the repo's entries whose branch is its base.
type PullRequest struct {
	// Repo is the repo's configured owner/name.
	Repo   string
	Number int
	// HeadSHA is the head commit the event named.
	HeadSHA string
	// Entries are the repo's entries (environments) to preview.
	Entries []config.Repo
	// Closed is set when the pull request was closed: its preview is removed.
	Closed bool
}

// Preview is a pull request's preview, per environment.
type Preview struct {
	Repo         string    `json:"repo" doc:"The repo, owner/name."`
	Number       int       `json:"number" doc:"The pull request's number."`
	HeadSHA      string    `json:"headSha" doc:"The pull request's head commit the last event named."`
	Updated      time.Time `json:"updated" doc:"When the preview last changed."`
	Environments []Result  `json:"environments" nullable:"false" doc:"The preview of each environment whose branch is the pull request's base."`
}

type prKey struct {
	repo   string
	number int
}

// Service runs previews one at a time, apart from deployments, and keeps the last of
// each open pull request in memory (a restart forgets them; the next event of the pull
// request computes its preview again).
type Service struct {
	fetch Fetcher
	dry   DryRunner
	pub   Publisher
	opts  Options
	// slot is held by the preview running, of a pull request or a diff.
	slot chan struct{}
	wake chan struct{}

	mu      sync.Mutex
	pending map[prKey]PullRequest
	order   []prKey
	stored  map[prKey]*Preview
	// running cancels the preview running, when a newer event of its pull request
	// replaces it.
	running     prKey
	stopRunning context.CancelCauseFunc
}

// errReplaced stops a preview whose pull request had a newer event.
var errReplaced = errors.New("replaced by a newer event of the pull request")

// New returns a Service; pub may be nil (previews are kept and served, not published).
func New(fetch Fetcher, dry DryRunner, pub Publisher, opts Options) *Service {
	return &Service{fetch: fetch, dry: dry, pub: pub, opts: opts, slot: make(chan struct{}, 1), wake: make(chan struct{}, 1),
		pending: map[prKey]PullRequest{}, stored: map[prKey]*Preview{}}
}

func keyOf(repo string, number int) prKey { return prKey{strings.ToLower(repo), number} }

// Enqueue queues pr's preview (or removal), replacing one of the same pull request
// still waiting. It never blocks.
func (s *Service) Enqueue(pr PullRequest) {
	k := keyOf(pr.Repo, pr.Number)
	s.mu.Lock()
	var dropped *PullRequest
	if _, waiting := s.pending[k]; !waiting {
		if len(s.order) >= max(s.opts.MaxPending, 1) {
			old := s.pending[s.order[0]]
			dropped = &old
			delete(s.pending, s.order[0])
			s.order = s.order[1:]
		}
		s.order = append(s.order, k)
	}
	s.pending[k] = pr
	if s.stopRunning != nil && s.running == k {
		s.stopRunning(errReplaced)
	}
	if pr.Closed {
		delete(s.stored, k)
	} else {
		s.store(k, pr, nil)
	}
	s.mu.Unlock()
	if dropped != nil && s.opts.Failed != nil {
		s.opts.Failed(dropped.Repo, dropped.Number, fmt.Errorf("preview dropped: over %d pull requests waiting", s.opts.MaxPending))
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run previews queued pull requests, one at a time, until ctx ends.
func (s *Service) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		for {
			// Waiting before taking the next lets newer events replace it meanwhile.
			s.yield(ctx)
			pr, ok := s.next()
			if !ok || ctx.Err() != nil {
				break
			}
			s.handle(ctx, pr)
		}
	}
}

func (s *Service) next() (PullRequest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.order) == 0 {
		return PullRequest{}, false
	}
	k := s.order[0]
	s.order = s.order[1:]
	pr := s.pending[k]
	delete(s.pending, k)
	return pr, true
}

// yield waits while deployments are waiting, at most MaxYield.
func (s *Service) yield(ctx context.Context) {
	if s.opts.Busy == nil || !s.opts.Busy() {
		return
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	limit := time.NewTimer(s.opts.MaxYield)
	defer limit.Stop()
	for s.opts.Busy() {
		select {
		case <-ctx.Done():
			return
		case <-limit.C:
			return
		case <-tick.C:
		}
	}
}

func (s *Service) handle(ctx context.Context, pr PullRequest) {
	if pr.Closed {
		s.remove(ctx, pr)
		return
	}
	select {
	case s.slot <- struct{}{}:
		defer func() { <-s.slot }()
	case <-ctx.Done():
		return
	}
	pctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	pctx, untrack := s.track(pctx, keyOf(pr.Repo, pr.Number))
	defer untrack()
	for _, repo := range pr.Entries {
		res := s.previewRef(pctx, repo, source.PullRef(pr.Number))
		if res.State == StateFailed && errors.Is(pctx.Err(), context.DeadlineExceeded) {
			res.Error = fmt.Sprintf("the preview took over %s and was stopped: %s", s.opts.Timeout, res.Error)
		}
		if !s.keep(pr, res) {
			return // closed, or a newer event replaced it meanwhile
		}
		s.publish(ctx, pr, res)
		if s.opts.Done != nil {
			s.opts.Done(pr.Repo, pr.Number, res)
		}
	}
}

// track makes the preview running under ctx stoppable by a newer event of k.
func (s *Service) track(ctx context.Context, k prKey) (context.Context, func()) {
	ctx, stop := context.WithCancelCause(ctx)
	s.mu.Lock()
	s.running, s.stopRunning = k, stop
	s.mu.Unlock()
	return ctx, func() {
		s.mu.Lock()
		s.stopRunning = nil
		s.mu.Unlock()
		stop(nil)
	}
}

// previewRef fetches ref and previews it.
func (s *Service) previewRef(ctx context.Context, repo config.Repo, ref string) Result {
	rev, err := s.fetch.FetchRef(ctx, repo, ref)
	if err != nil {
		return Result{Environment: repo.Environment, Namespace: repo.Namespace, Ref: ref, State: StateFailed, Error: cutError(err.Error()), Finished: time.Now().UTC(), Changes: noChanges()}
	}
	return run(ctx, s.fetch, s.dry, repo, ref, rev.Commit, s.opts.Limits)
}

// keep stores an environment's result, unless the pull request was closed or a newer
// event of it is waiting.
func (s *Service) keep(pr PullRequest, res Result) bool {
	k := keyOf(pr.Repo, pr.Number)
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.stored[k]
	if _, newer := s.pending[k]; !ok || newer || p.HeadSHA != pr.HeadSHA {
		return false
	}
	s.store(k, pr, &res)
	return true
}

// store records pr's preview with res (every environment pending when res is nil),
// and forgets the least recently updated past the bounds. s.mu is held.
func (s *Service) store(k prKey, pr PullRequest, res *Result) {
	p, ok := s.stored[k]
	if !ok || p.HeadSHA != pr.HeadSHA || res == nil {
		p = &Preview{Repo: pr.Repo, Number: pr.Number, HeadSHA: pr.HeadSHA}
		for _, e := range pr.Entries {
			p.Environments = append(p.Environments, Result{Environment: e.Environment, Namespace: e.Namespace, Ref: source.PullRef(pr.Number), Commit: pr.HeadSHA, State: StatePending, Changes: noChanges()})
		}
		s.stored[k] = p
	}
	if res != nil {
		for i := range p.Environments {
			if p.Environments[i].Environment == res.Environment {
				p.Environments[i] = *res
			}
		}
	}
	p.Updated = time.Now().UTC()
	s.evict(k.repo, s.opts.MaxPerRepo)
	s.evict("", s.opts.MaxTotal)
}

// evict forgets the least recently updated previews of repo ("" for all) past limit.
func (s *Service) evict(repo string, limit int) {
	var ks []prKey
	for k := range s.stored {
		if repo == "" || k.repo == repo {
			ks = append(ks, k)
		}
	}
	if len(ks) <= limit {
		return
	}
	sort.Slice(ks, func(i, j int) bool { return s.stored[ks[i]].Updated.Before(s.stored[ks[j]].Updated) })
	for _, k := range ks[:len(ks)-limit] {
		delete(s.stored, k)
	}
}

func (s *Service) publish(ctx context.Context, pr PullRequest, res Result) {
	if s.pub == nil {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.pub.Publish(pctx, reportOf(pr.Repo, pr.Number, res, s.opts.PublicURL)); err != nil && s.opts.Failed != nil {
		s.opts.Failed(pr.Repo, pr.Number, fmt.Errorf("publishing the preview of %s: %w", res.Environment, err))
	}
}

func (s *Service) remove(ctx context.Context, pr PullRequest) {
	if s.pub == nil {
		return
	}
	owner, name, _ := strings.Cut(pr.Repo, "/")
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.pub.Remove(pctx, owner, name, pr.Number); err != nil && s.opts.Failed != nil {
		s.opts.Failed(pr.Repo, pr.Number, fmt.Errorf("removing the closed pull request's preview: %w", err))
	}
}

// List returns the repo's previews, by pull request number.
func (s *Service) List(repo string) []Preview {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []Preview{}
	for k, p := range s.stored {
		if k.repo == strings.ToLower(repo) {
			out = append(out, clone(p))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out
}

// Get returns pull request number's preview.
func (s *Service) Get(repo string, number int) (Preview, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.stored[keyOf(repo, number)]
	if !ok {
		return Preview{}, false
	}
	return clone(p), true
}

func clone(p *Preview) Preview {
	out := *p
	out.Environments = append([]Result(nil), p.Environments...)
	return out
}

// Diff previews entries at ref (fetched from each entry's URL), or the uploaded files
// when files is not nil, at once, in the preview worker's turn; within DiffTimeout.
func (s *Service) Diff(ctx context.Context, entries []config.Repo, ref string, files Uploaded) ([]Result, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.DiffTimeout)
	defer cancel()
	select {
	case s.slot <- struct{}{}:
		defer func() { <-s.slot }()
	case <-ctx.Done():
		return nil, fmt.Errorf("the preview worker stayed busy for %s: try again", s.opts.DiffTimeout)
	}
	out := make([]Result, len(entries))
	for i, repo := range entries {
		if files != nil {
			out[i] = run(ctx, files, s.dry, repo, "", "", s.opts.Limits)
			continue
		}
		out[i] = s.previewRef(ctx, repo, ref)
	}
	return out, nil
}
