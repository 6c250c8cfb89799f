// Package report tells GitHub about deployd's deployments: a GitHub deployment per
// deployd deployment, and its statuses as it goes. Reports go through a queue of their
// own, in order per deployment and retried with backoff, so GitHub being slow, down or
// rate-limiting never blocks or fails a deployment.
package report

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v60/github"
)

// API is the part of GitHub's REST API deployd uses.
type API interface {
	CreateDeployment(ctx context.Context, owner, repo string, req *github.DeploymentRequest) (int64, error)
	CreateStatus(ctx context.Context, owner, repo string, id int64, req *github.DeploymentStatusRequest) error
}

// maxDescription is GitHub's limit on a deployment status description.
const maxDescription = 140

// ClientOptions say how to reach GitHub.
type ClientOptions struct {
	// APIURL is the REST API's base URL; empty means https://api.github.com/. For GitHub
	// Enterprise: https://HOST/api/v3/.
	APIURL string
	// TokenFile holds a token, re-read when it changes.
	TokenFile string
	// AppID, AppKeyFile and InstallationID authenticate as a GitHub App installation;
	// installation tokens are refreshed before they expire.
	AppID          int64
	AppKeyFile     string
	InstallationID int64
	// OnResponse, when set, is told each response's status code (metrics).
	OnResponse func(code int)
}

// Enabled reports whether the options name any credentials.
func (o ClientOptions) Enabled() bool { return o.TokenFile != "" || o.AppID != 0 }

// client is API over go-github.
type client struct {
	gh         *github.Client
	onResponse func(int)
}

var _ API = (*client)(nil)

// NewClient returns an API client for the options' credentials.
func NewClient(opts ClientOptions) (API, error) {
	gh, err := NewGitHub(opts)
	if err != nil {
		return nil, err
	}
	return &client{gh: gh, onResponse: opts.OnResponse}, nil
}

// NewGitHub returns a go-github client for the options' credentials: a token re-read from
// its file, or a GitHub App installation token refreshed before it expires. Each request
// times out after 30 seconds. OnResponse is left to the caller.
func NewGitHub(opts ClientOptions) (*github.Client, error) {
	base := opts.APIURL
	if base == "" {
		base = "https://api.github.com/"
	}
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	baseURL, err := url.Parse(base)
	if err != nil || baseURL.Host == "" {
		return nil, fmt.Errorf("--github-api-url %q is not a URL", opts.APIURL)
	}
	var tr http.RoundTripper = http.DefaultTransport
	switch {
	case opts.AppID != 0:
		if opts.AppKeyFile == "" || opts.InstallationID == 0 {
			return nil, errors.New("a GitHub App needs --github-app-id, --github-app-key-file and --github-app-installation-id")
		}
		itr, err := ghinstallation.NewKeyFromFile(tr, opts.AppID, opts.InstallationID, opts.AppKeyFile)
		if err != nil {
			return nil, fmt.Errorf("reading the GitHub App key: %w", err)
		}
		itr.BaseURL = strings.TrimSuffix(base, "/")
		tr = itr
	case opts.TokenFile != "":
		tr = &tokenTransport{path: opts.TokenFile, next: tr}
	default:
		return nil, errors.New("no GitHub credentials: give --github-token-file or a GitHub App")
	}
	gh := github.NewClient(&http.Client{Transport: tr, Timeout: 30 * time.Second})
	gh.BaseURL = baseURL
	return gh, nil
}

func (c *client) observe(resp *github.Response) {
	if c.onResponse != nil && resp != nil && resp.Response != nil {
		c.onResponse(resp.StatusCode)
	}
}

func (c *client) CreateDeployment(ctx context.Context, owner, repo string, req *github.DeploymentRequest) (int64, error) {
	if req.Description != nil {
		req.Description = github.String(truncate(*req.Description))
	}
	d, resp, err := c.gh.Repositories.CreateDeployment(ctx, owner, repo, req)
	c.observe(resp)
	if err != nil {
		return 0, err
	}
	return d.GetID(), nil
}

func (c *client) CreateStatus(ctx context.Context, owner, repo string, id int64, req *github.DeploymentStatusRequest) error {
	if req.Description != nil {
		req.Description = github.String(truncate(*req.Description))
	}
	_, resp, err := c.gh.Repositories.CreateDeploymentStatus(ctx, owner, repo, id, req)
	c.observe(resp)
	return err
}

// truncate cuts s to GitHub's 140 characters, marking the cut.
func truncate(s string) string {
	r := []rune(s)
	if len(r) <= maxDescription {
		return s
	}
	return string(r[:maxDescription-1]) + "…"
}

// tokenTransport authenticates with the token in a file, re-read when it changes.
type tokenTransport struct {
	path string
	next http.RoundTripper

	mu      sync.Mutex
	modTime time.Time
	token   string
}

func (t *tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	token, err := t.read()
	if err != nil {
		return nil, err
	}
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+token)
	return t.next.RoundTrip(req)
}

func (t *tokenTransport) read() (string, error) {
	fi, err := os.Stat(t.path)
	if err != nil {
		return "", fmt.Errorf("GitHub token file: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token != "" && fi.ModTime().Equal(t.modTime) {
		return t.token, nil
	}
	b, err := os.ReadFile(t.path)
	if err != nil {
		return "", fmt.Errorf("GitHub token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("GitHub token file %s is empty", t.path)
	}
	t.token, t.modTime = tok, fi.ModTime()
	return tok, nil
}
