package report

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/google/go-github/v60/github"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/source"
)

// Options configure a Reporter.
type Options struct {
	// PublicURL is deployd's base URL, for each status' log_url.
	PublicURL string
	// MaxAge drops a report GitHub has not taken this long after it was due.
	MaxAge time.Duration
	// BackoffBase and BackoffMax bound the retry delay after a failure.
	BackoffBase, BackoffMax time.Duration
	// Reported, when set, is told each GitHub deployment id and state reported.
	Reported func(repo config.Repo, number int, deploymentID int64, state string)
	// Dropped, when set, is told of each report given up on, with why.
	Dropped func(repo config.Repo, number int, state string, reason string)
}

// DefaultOptions retries for up to 10 minutes, backing off from 1s to 1m.
func DefaultOptions() Options {
	return Options{MaxAge: 10 * time.Minute, BackoffBase: time.Second, BackoffMax: time.Minute}
}

// Reporter turns deployment records into GitHub deployments and statuses.
type Reporter struct {
	api  API
	opts Options

	mu      sync.Mutex
	streams map[string]*stream
	ended   map[string]bool // deployments whose final state was queued
	unseen  map[string]bool // repos GitHub answered 404 for: logged once
	wg      sync.WaitGroup
	ctx     context.Context
}

// stream is one deployd deployment's reports, sent in order.
type stream struct {
	repo   config.Repo
	number int
	sha    string
	// images are the record's images, put in the GitHub deployment's payload (nil: not
	// recorded): another cluster's deployd promoting from this environment compares them.
	images  []string
	id      int64 // the GitHub deployment's id, once created
	queued  int   // how many of statesFor's states were queued: they only grow
	jobs    chan job
	dropped bool
}

type job struct {
	state, description string
	due                time.Time
}

// New returns a Reporter; call Start before use.
func New(api API, opts Options) *Reporter {
	return &Reporter{api: api, opts: opts, streams: map[string]*stream{}, ended: map[string]bool{}, unseen: map[string]bool{}, ctx: context.Background()}
}

// Start lets reports be sent until ctx ends.
func (r *Reporter) Start(ctx context.Context) {
	r.mu.Lock()
	r.ctx = ctx
	r.mu.Unlock()
}

// Wait waits until every queued report was sent or dropped (tests, shutdown).
func (r *Reporter) Wait() { r.wg.Wait() }

// Record reports a record's change. A record that came from a GitHub deployment passes
// its id (githubID), and no new GitHub deployment is created for it.
func (r *Reporter) Record(repo config.Repo, rec history.Record, githubID int64) {
	states := statesFor(rec)
	if len(states) == 0 || (rec.Phase == history.Blocked && githubID == 0) {
		return // a blocked promotion is told on GitHub only to who asked for it there
	}
	s := r.stream(repo, rec, githubID)
	if s == nil {
		return // its final state was already queued
	}
	r.mu.Lock()
	todo := states[min(s.queued, len(states)):]
	s.queued = max(s.queued, len(states))
	r.mu.Unlock()
	for _, st := range todo {
		s.jobs <- job{state: st, description: describe(rec, st), due: time.Now()}
	}
	if rec.Phase.Done() {
		r.mu.Lock()
		delete(r.streams, streamKey(repo, rec.Number))
		r.ended[streamKey(repo, rec.Number)] = true
		close(s.jobs)
		r.mu.Unlock()
	}
}

// statesFor maps a record's phase to every GitHub state reported by then, in order.
func statesFor(rec history.Record) []string {
	switch rec.Phase {
	case history.Queued:
		return []string{"queued"}
	case history.Applying, history.Waiting:
		return []string{"queued", "in_progress"}
	case history.Succeeded:
		return []string{"queued", "in_progress", "success"}
	case history.Failed:
		return []string{"queued", "in_progress", "failure"}
	case history.Error:
		return []string{"queued", "in_progress", "error"}
	case history.Superseded:
		return []string{"queued", "in_progress", "inactive"}
	case history.Blocked:
		return []string{"failure"} // only for a GitHub deployment asked for (see Record)
	}
	return nil // skipped-no-change: nothing was deployed
}

func describe(rec history.Record, state string) string {
	name := "deployd " + rec.Name()
	switch state {
	case "queued":
		return name + " queued"
	case "in_progress":
		return name + " applying " + source.ShortSHA(rec.Commit.SHA)
	case "success":
		ready, total := 0, 0
		for _, o := range rec.Objects {
			if o.Action == "pruned" || o.Action == "prune skipped" {
				continue
			}
			total++
			if o.Status == "Current" {
				ready++
			}
		}
		return fmt.Sprintf("%d/%d objects ready", ready, total)
	case "inactive":
		return name + " superseded by a newer deployment"
	}
	return rec.Error
}

func streamKey(repo config.Repo, number int) string {
	return repo.Key().String() + "#" + strconv.Itoa(number)
}

func (r *Reporter) stream(repo config.Repo, rec history.Record, githubID int64) *stream {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := streamKey(repo, rec.Number)
	if s, ok := r.streams[k]; ok {
		return s
	}
	if r.ended[k] {
		return nil
	}
	s := &stream{repo: repo, number: rec.Number, sha: rec.Commit.SHA, id: githubID, jobs: make(chan job, 16)}
	if rec.ImagesRecorded {
		s.images = append([]string{}, rec.Images...)
	}
	r.streams[k] = s
	ctx := r.ctx
	r.wg.Go(func() { r.run(ctx, s) })
	return s
}

// run sends a deployment's reports in order.
func (r *Reporter) run(ctx context.Context, s *stream) {
	for j := range s.jobs {
		if s.dropped {
			continue
		}
		if reason := r.send(ctx, s, j); reason != "" {
			r.mu.Lock()
			s.dropped = true
			r.mu.Unlock()
			if r.opts.Dropped != nil {
				r.opts.Dropped(s.repo, s.number, j.state, reason)
			}
		}
	}
}

// send delivers one report, retrying until it is taken, refused for good, or too old.
// It returns why it gave up, or "" once sent.
func (r *Reporter) send(ctx context.Context, s *stream, j job) string {
	owner, name := s.repo.Owner(), s.repo.Name[len(s.repo.Owner())+1:]
	delay := r.opts.BackoffBase
	for {
		err := r.attempt(ctx, s, owner, name, j)
		if err == nil {
			if r.opts.Reported != nil {
				r.opts.Reported(s.repo, s.number, s.id, j.state)
			}
			return ""
		}
		var ghErr *github.ErrorResponse
		if errors.As(err, &ghErr) && ghErr.Response != nil {
			switch {
			case ghErr.Response.StatusCode == http.StatusNotFound:
				return r.notFound(s.repo)
			case !Transient(err):
				return fmt.Sprintf("GitHub refused it: %d %s", ghErr.Response.StatusCode, ghErr.Message)
			}
		}
		wait := RetryAfter(err, delay)
		if time.Since(j.due)+wait > r.opts.MaxAge {
			return fmt.Sprintf("GitHub did not take it within %s: %v", r.opts.MaxAge, err)
		}
		select {
		case <-ctx.Done():
			return "deployd stopped"
		case <-time.After(wait):
		}
		delay = min(delay*2, r.opts.BackoffMax)
	}
}

func (r *Reporter) attempt(ctx context.Context, s *stream, owner, name string, j job) error {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if s.id == 0 {
		rec := s.repo
		id, err := r.api.CreateDeployment(rctx, owner, name, &github.DeploymentRequest{
			Ref:                   github.String(s.sha),
			Environment:           github.String(rec.Environment),
			AutoMerge:             github.Bool(false),
			RequiredContexts:      &[]string{},
			TransientEnvironment:  github.Bool(rec.TransientEnvironment),
			ProductionEnvironment: github.Bool(rec.ProductionEnvironment),
			Description:           github.String("deployd " + history.Record{Number: s.number}.Name()),
			Payload:               payload(s),
		})
		if err != nil {
			return err
		}
		s.id = id
	}
	req := &github.DeploymentStatusRequest{State: github.String(j.state), Description: github.String(j.description),
		Environment: github.String(s.repo.Environment)}
	if r.opts.PublicURL != "" {
		req.LogURL = github.String(fmt.Sprintf("%s/deployment/%s/history/%d?environment=%s", r.opts.PublicURL, s.repo.Name, s.number, s.repo.Environment))
	}
	if s.repo.EnvironmentURL != "" {
		req.EnvironmentURL = github.String(s.repo.EnvironmentURL)
	}
	if j.state == "success" {
		req.AutoInactive = github.Bool(true) // older deployments of the environment become inactive
	}
	return r.api.CreateStatus(rctx, owner, name, s.id, req)
}

// payload is a GitHub deployment's payload: deployd's number for it and, when known, the
// images it runs (PayloadImages reads them back).
func payload(s *stream) map[string]any {
	p := map[string]any{"number": s.number}
	if s.images != nil {
		p["images"] = s.images
	}
	return map[string]any{"deployd": p}
}

// Payload is the part of a GitHub deployment's payload deployd writes.
type Payload struct {
	Deployd struct {
		Number int `json:"number"`
		// Images is nil when the deployment did not record them.
		Images []string `json:"images"`
	} `json:"deployd"`
}

// notFound logs a repo GitHub cannot show once, not per deployment.
func (r *Reporter) notFound(repo config.Repo) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unseen[repo.Name] {
		return ""
	}
	r.unseen[repo.Name] = true
	return "GitHub answered 404: the token cannot see " + repo.Name + " (reported once)"
}

// Transient reports whether a GitHub call that failed with err may succeed if tried
// again: any failure but a 4xx answer, where 403 and 429 count as transient (rate limits).
func Transient(err error) bool {
	var ghErr *github.ErrorResponse
	if !errors.As(err, &ghErr) || ghErr.Response == nil {
		return true
	}
	code := ghErr.Response.StatusCode
	return code < 400 || code >= 500 || code == http.StatusTooManyRequests || code == http.StatusForbidden
}

// RetryAfter says how long to wait before trying again after err: until GitHub's
// rate-limit reset when it gave one, else backoff.
func RetryAfter(err error, backoff time.Duration) time.Duration {
	var rl *github.RateLimitError
	if errors.As(err, &rl) {
		if d := time.Until(rl.Rate.Reset.Time); d > 0 {
			return d
		}
	}
	var abuse *github.AbuseRateLimitError
	if errors.As(err, &abuse) && abuse.RetryAfter != nil {
		return *abuse.RetryAfter
	}
	return backoff
}
