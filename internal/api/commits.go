package api

import (
	"context"
	"net/http"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/view"
)

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
	State  string  `json:"state" enum:"carried,pending,unknown,not-on-branch" doc:"carried: a deployment's commit is it or a descendant of it (see record, which may still be running, or have failed); pending: the branch head deployd saw contains it, not deployed yet; unknown: not in the history deployd knows (not fetched yet, or deeper below a fetched head than its parents); not-on-branch: the whole history of the branch head was known and it is not there."`
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
		Summary: "Which deployment carries a commit",
		Description: "The newest deployment whose commit is the given one or a descendant of it, as far as deployd knows the branch's history: " +
			"the commits it fetched as branch heads (its deployment records) and their parents. A commit overtaken by a newer push before deployd " +
			"saw it is carried by the newer one. Served from memory, like every read.",
		Tags: []string{"deployments"}, Errors: append(readErrors, http.StatusBadRequest)}, s.getCommit)
}

func (s *Server) getCommit(ctx context.Context, in *commitInput) (*commitOutput, error) {
	e, err := s.one(in.Owner, in.Repo, in.Environment)
	if err != nil {
		return nil, err
	}
	return &commitOutput{Body: carrier(e, strings.ToLower(in.SHA))}, nil
}

// carrier finds the newest record whose commit contains the commit prefix names, else
// judges it against the branch head deployd saw and the newest record's commit.
func carrier(e view.Entry, prefix string) CommitDeployment {
	out := CommitDeployment{Commit: prefix, State: CommitUnknown, Head: e.Observed.Commit}
	known := knownCommits(e)
	var newest string
	for _, r := range e.Records { // newest first
		if r.Commit.SHA == "" || r.Phase == history.Queued {
			continue
		}
		if newest == "" {
			newest = r.Commit.SHA
		}
		if found, _ := contains(known, r.Commit.SHA, prefix); found != "" {
			rec := recordOf(r)
			out.Commit, out.State, out.Record = found, CommitCarried, &rec
			return out
		}
	}
	// The newest record's commit is a head too, and the newer while its check runs.
	for _, head := range []string{e.Observed.Commit, newest} {
		if head == "" {
			continue
		}
		found, complete := contains(known, head, prefix)
		switch {
		case found != "":
			out.Commit, out.State = found, CommitPending
			return out
		case complete:
			out.State, out.Head = CommitNotOnBranch, head
			return out
		}
	}
	return out
}

// knownCommits is the history deployd knows of the branch: each commit it fetched as a
// head, by SHA, with its parents.
func knownCommits(e view.Entry) map[string]history.Commit {
	known := make(map[string]history.Commit, len(e.Records)+1)
	for _, r := range e.Records {
		if r.Commit.SHA != "" {
			known[r.Commit.SHA] = r.Commit
		}
	}
	if o := e.Observed; o.Commit != "" {
		known[o.Commit] = history.Commit{SHA: o.Commit, Parents: o.Parents, Root: o.Root}
	}
	return known
}

// contains walks head's known history: it returns the SHA there the prefix matches (a
// parent's SHA is known even when the parent is not), and whether the whole history was
// known (down to root commits) when it is not there.
func contains(known map[string]history.Commit, head, prefix string) (found string, complete bool) {
	complete = true
	seen := map[string]bool{}
	queue := []string{head}
	for len(queue) > 0 {
		sha := queue[0]
		queue = queue[1:]
		if seen[sha] {
			continue
		}
		seen[sha] = true
		if strings.HasPrefix(sha, prefix) {
			return sha, true
		}
		c, ok := known[sha]
		switch {
		case !ok || (len(c.Parents) == 0 && !c.Root):
			complete = false // below what deployd fetched, or a record from before parents were kept
		default:
			queue = append(queue, c.Parents...)
		}
	}
	return "", complete
}
