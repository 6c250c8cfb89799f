package api

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/source"
)

// Ancestry tells which of a repo's commits contains another, from the git cache alone
// (source.Source).
type Ancestry interface {
	Contains(repo config.Repo, heads []string, prefix string) (source.Containment, error)
}

var _ Ancestry = (*source.Source)(nil)

// The states of a commit's deployment.
const (
	CommitCarried     = "carried"
	CommitPending     = "pending"
	CommitUnknown     = "unknown"
	CommitNotOnBranch = "not-on-branch"
)

// CommitDeployment says which deployment carries a commit.
type CommitDeployment struct {
	Commit string  `json:"commit" doc:"The commit's full SHA once deployd found it, else the SHA or prefix asked for."`
	State  string  `json:"state" enum:"carried,pending,unknown,not-on-branch" doc:"carried: a deployment's commit is it or a descendant of it (see record, which may still be running, or have failed); pending: the branch head deployd saw contains it, not deployed yet; unknown: not in the history deployd fetched (not fetched yet, or below the shallow clone's boundary); not-on-branch: the branch head's whole history was read and it is not there."`
	Record *Record `json:"record,omitempty" doc:"The newest deployment whose commit contains it, when carried."`
	Head   string  `json:"head,omitempty" doc:"The branch head deployd last saw (for not-on-branch, the head whose history was read)."`
}

type commitInput struct {
	RepoPath
	Environment string `query:"environment" maxLength:"63" doc:"The environment; needed when the repo has several."`
	SHA         string `path:"sha" minLength:"7" maxLength:"40" pattern:"^[0-9a-fA-F]+$" doc:"The commit's SHA, or a prefix of at least 7 hex digits."`
}

type commitOutput struct {
	Body CommitDeployment
}

func (s *Server) registerCommits() {
	huma.Register(s.api, huma.Operation{OperationID: "get-commit-deployment", Method: http.MethodGet, Path: "/deployment/{owner}/{repo}/commits/{sha}",
		Summary:     "Which deployment carries a commit",
		Description: "The newest deployment whose commit is the given one or a descendant of it on the branch, as far as deployd's git cache knows the history (the branch heads it fetched and their parents): a commit overtaken by a newer push before deployd saw it is carried by the newer one. Reads the cache only, never the network.",
		Tags:        []string{"deployments"}, Errors: append(readErrors, http.StatusBadRequest)}, s.getCommit)
}

func (s *Server) getCommit(ctx context.Context, in *commitInput) (*commitOutput, error) {
	e, err := s.one(in.Owner, in.Repo, in.Environment)
	if err != nil {
		return nil, err
	}
	out := CommitDeployment{Commit: in.SHA, State: CommitUnknown, Head: e.Observed.Commit}
	if s.deps.Ancestry == nil {
		return &commitOutput{Body: out}, nil
	}
	var heads []string
	byHead := map[string]history.Record{}
	for _, r := range e.Records { // newest first
		if r.Commit.SHA == "" || r.Phase == history.Queued {
			continue
		}
		if _, ok := byHead[r.Commit.SHA]; !ok {
			heads = append(heads, r.Commit.SHA)
			byHead[r.Commit.SHA] = r
		}
	}
	found, err := s.deps.Ancestry.Contains(e.Repo, heads, in.SHA)
	if err != nil {
		return nil, huma.Error400BadRequest(err.Error())
	}
	if found.Head != "" {
		rec := recordOf(byHead[found.Head])
		out.Commit, out.State, out.Record = found.Commit, CommitCarried, &rec
		return &commitOutput{Body: out}, nil
	}
	// The branch head deployd saw, then the newest deployment's commit (a head too, and
	// the newer while its check has not ended).
	judge := []string{e.Observed.Commit}
	if len(heads) > 0 && heads[0] != e.Observed.Commit {
		judge = append(judge, heads[0])
	}
	for _, head := range judge {
		if head == "" {
			continue
		}
		found, err := s.deps.Ancestry.Contains(e.Repo, []string{head}, in.SHA)
		switch {
		case err != nil:
			return nil, huma.Error400BadRequest(err.Error())
		case found.Head != "":
			out.Commit, out.State = found.Commit, CommitPending
			return &commitOutput{Body: out}, nil
		case found.Complete:
			out.State, out.Head = CommitNotOnBranch, head
			return &commitOutput{Body: out}, nil
		}
	}
	return &commitOutput{Body: out}, nil
}
