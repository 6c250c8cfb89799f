// Package checks publishes a pull request preview's outcome on GitHub: a check run per
// environment when deployd is a GitHub App, else a commit status and one pull request
// comment per environment, edited in place.
package checks

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/google/go-github/v60/github"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/report"
)

// Report is one environment's preview of one pull request head commit.
type Report struct {
	Owner, Repo string
	Environment string
	HeadSHA     string
	PRNumber    int
	// Conclusion is "success" (would apply cleanly), "failure" (validation or dry-run
	// errors) or "neutral" (no changes).
	Conclusion string
	// Title is one line; newlines are replaced.
	Title string
	// Summary is Markdown built by the caller, who passes every piece of repo content in
	// it through Escape. The Publisher caps it at GitHub's size limit, linking DetailsURL.
	Summary string
	// DetailsURL links the full diff in deployd's API.
	DetailsURL  string
	Annotations []Annotation
}

// Annotation is an error at a file and line of the pull request.
type Annotation struct {
	// Path is relative to the repository's root, e.g. "deploy/manifests/web.yaml".
	Path string
	// Line is 1-based; 0 puts the annotation on the file's first line.
	Line    int
	Message string
}

// Options bound what a Publisher sends and how long it tries.
type Options struct {
	// CallTimeout bounds each GitHub request.
	CallTimeout time.Duration
	// Attempts is how often a request is tried when GitHub fails (5xx, rate limits,
	// network errors), as internal/report retries; other 4xx answers are final.
	Attempts int
	// BackoffBase and BackoffMax bound the delay between attempts.
	BackoffBase, BackoffMax time.Duration
	// MaxWait is the longest rate-limit reset waited for; a longer one fails the call.
	MaxWait time.Duration
	// MaxAnnotations caps the annotations sent per check run; the summary says so.
	MaxAnnotations int
	// MaxCommentPages bounds the pages of 100 comments searched for deployd's comment.
	MaxCommentPages int
}

// DefaultOptions tries each request 3 times, 10 seconds each, and sends at most 500
// annotations.
func DefaultOptions() Options {
	return Options{CallTimeout: 10 * time.Second, Attempts: 3, BackoffBase: time.Second, BackoffMax: 10 * time.Second,
		MaxWait: time.Minute, MaxAnnotations: 500, MaxCommentPages: 30}
}

// GitHub's limits.
const (
	maxSummary     = 65535 // characters of a check run's output.summary
	maxComment     = 65536 // characters of an issue comment's body
	maxDescription = 140   // characters of a commit status' description
	batchSize      = 50    // annotations per check run request
	maxMessage     = 4096  // characters kept of an annotation's message (GitHub allows 64 KiB)
)

// Publisher posts previews to GitHub. It is safe for concurrent use.
type Publisher struct {
	gh         *github.Client
	appID      int64 // 0: a plain token, so commit statuses and comments
	opts       Options
	onResponse func(code int)

	mu         sync.Mutex
	locks      map[string]*keyLock // per pull request
	login      string              // the token's user
	loginKnown bool
}

type keyLock struct {
	held  chan struct{} // holds a value while locked
	users int
}

// New returns a Publisher over gh. appID is the GitHub App gh authenticates as, or 0 for
// a plain token (check runs need an App). onResponse, when set, is told each response's
// status code.
func New(gh *github.Client, appID int64, opts Options, onResponse func(code int)) *Publisher {
	return &Publisher{gh: gh, appID: appID, opts: opts, onResponse: onResponse, locks: map[string]*keyLock{}}
}

// NewForGitHub returns a Publisher for deployd's GitHub credentials, the ones deployment
// reports use (internal/report).
func NewForGitHub(copts report.ClientOptions, opts Options) (*Publisher, error) {
	gh, err := report.NewGitHub(copts)
	if err != nil {
		return nil, err
	}
	return New(gh, copts.AppID, opts, copts.OnResponse), nil
}

// CheckRuns reports whether previews are check runs (a GitHub App), not statuses and comments.
func (p *Publisher) CheckRuns() bool { return p.appID != 0 }

// Name is the check run's or commit status' name for an environment.
func Name(environment string) string { return "deployd / " + environment }

// Publish posts r: creates or updates the check run on r.HeadSHA, or sets the commit
// status and creates or edits the pull request's comment for r.Environment.
func (p *Publisher) Publish(ctx context.Context, r Report) error {
	if err := r.check(); err != nil {
		return err
	}
	unlock, err := p.lock(ctx, fmt.Sprintf("%s/%s#%d", r.Owner, r.Repo, r.PRNumber))
	if err != nil {
		return err
	}
	defer unlock()
	if p.CheckRuns() {
		err = p.publishCheckRun(ctx, r)
	} else {
		err = p.publishComment(ctx, r)
	}
	if err != nil {
		return fmt.Errorf("%s/%s#%d %s: %w", r.Owner, r.Repo, r.PRNumber, Name(r.Environment), err)
	}
	return nil
}

// Remove marks the pull request's previews as removed once it is closed. Check runs need
// nothing: they stay on their commit, true for it. Comments are edited to say so.
func (p *Publisher) Remove(ctx context.Context, owner, repo string, prNumber int) error {
	if p.CheckRuns() {
		return nil
	}
	if err := checkRepo(owner, repo); err != nil {
		return err
	}
	unlock, err := p.lock(ctx, fmt.Sprintf("%s/%s#%d", owner, repo, prNumber))
	if err != nil {
		return err
	}
	defer unlock()
	if err := p.removeComments(ctx, owner, repo, prNumber); err != nil {
		return fmt.Errorf("%s/%s#%d: %w", owner, repo, prNumber, err)
	}
	return nil
}

// lock serializes work on one pull request, so two publishes never both create its
// comment and a removal never races a publish. Entries live only while used.
func (p *Publisher) lock(ctx context.Context, key string) (unlock func(), err error) {
	p.mu.Lock()
	l := p.locks[key]
	if l == nil {
		l = &keyLock{held: make(chan struct{}, 1)}
		p.locks[key] = l
	}
	l.users++
	p.mu.Unlock()
	release := func() {
		p.mu.Lock()
		if l.users--; l.users == 0 {
			delete(p.locks, key)
		}
		p.mu.Unlock()
	}
	select {
	case l.held <- struct{}{}:
		return func() { <-l.held; release() }, nil
	case <-ctx.Done():
		release()
		return nil, fmt.Errorf("%s: waiting for the previous publish: %w", key, ctx.Err())
	}
}

var (
	repoPart = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
	sha      = regexp.MustCompile(`^(?:[0-9a-f]{40}|[0-9a-f]{64})$`)
)

func checkRepo(owner, repo string) error {
	for _, s := range []string{owner, repo} {
		if !repoPart.MatchString(s) || s == "." || s == ".." {
			return fmt.Errorf("%q/%q is not a GitHub owner/repo", owner, repo)
		}
	}
	return nil
}

func (r Report) check() error {
	if err := checkRepo(r.Owner, r.Repo); err != nil {
		return err
	}
	switch {
	case config.CheckEnvironment(r.Environment) != "":
		return errors.New(config.CheckEnvironment(r.Environment))
	case !sha.MatchString(r.HeadSHA):
		return fmt.Errorf("%s/%s: head %q is not a full commit SHA", r.Owner, r.Repo, r.HeadSHA)
	case r.PRNumber < 1:
		return fmt.Errorf("%s/%s: pull request number %d is not positive", r.Owner, r.Repo, r.PRNumber)
	case r.Conclusion != "success" && r.Conclusion != "failure" && r.Conclusion != "neutral":
		return fmt.Errorf("%s/%s#%d: conclusion %q is not success, failure or neutral", r.Owner, r.Repo, r.PRNumber, r.Conclusion)
	case r.DetailsURL != "" && !linkable(r.DetailsURL):
		return fmt.Errorf("%s/%s#%d: details URL %q is not an http(s) URL that can be linked in Markdown", r.Owner, r.Repo, r.PRNumber, r.DetailsURL)
	}
	return nil
}

// linkable reports whether u is an http(s) URL that can stand in a Markdown link as is.
func linkable(u string) bool {
	parsed, err := url.Parse(u)
	return err == nil && (parsed.Scheme == "https" || parsed.Scheme == "http") && parsed.Host != "" &&
		len(u) <= 2048 && !strings.ContainsAny(u, " ()<>[]\"\n\r\t`")
}
