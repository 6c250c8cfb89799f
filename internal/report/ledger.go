package report

import (
	"context"

	"github.com/google/go-github/v60/github"
)

// Ledger reads GitHub's deployments and their statuses: how another cluster's deployd
// did with a commit in its environment (internal/promote asks it).
type Ledger struct{ c *client }

// Bounds on what one question reads: the newest deployments of a commit to an
// environment, and the newest statuses of each.
const (
	maxLedgerDeployments = 20
	maxLedgerStatuses    = 100
)

// NewLedger returns a Ledger for the options' credentials.
func NewLedger(opts ClientOptions) (*Ledger, error) {
	api, err := NewClient(opts)
	if err != nil {
		return nil, err
	}
	return &Ledger{c: api.(*client)}, nil
}

// Deployments lists the newest GitHub deployments of sha to environment, newest first
// (at most 20).
func (l *Ledger) Deployments(ctx context.Context, owner, repo, sha, environment string) ([]*github.Deployment, error) {
	ds, resp, err := l.c.gh.Repositories.ListDeployments(ctx, owner, repo, &github.DeploymentsListOptions{
		SHA: sha, Environment: environment, ListOptions: github.ListOptions{PerPage: maxLedgerDeployments}})
	l.c.observe(resp)
	if len(ds) > maxLedgerDeployments {
		ds = ds[:maxLedgerDeployments]
	}
	return ds, err
}

// Statuses lists a GitHub deployment's newest statuses, newest first (at most 100).
func (l *Ledger) Statuses(ctx context.Context, owner, repo string, id int64) ([]*github.DeploymentStatus, error) {
	ss, resp, err := l.c.gh.Repositories.ListDeploymentStatuses(ctx, owner, repo, id, &github.ListOptions{PerPage: maxLedgerStatuses})
	l.c.observe(resp)
	if len(ss) > maxLedgerStatuses {
		ss = ss[:maxLedgerStatuses]
	}
	return ss, err
}
