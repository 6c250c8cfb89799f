package api

import (
	"context"
	"net/http"
	"regexp"

	"github.com/danielgtaylor/huma/v2"

	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/source"
	"github.com/deployd/deployd/internal/view"
)

type promoteInput struct {
	RepoPath
	Environment string `query:"environment" maxLength:"63" doc:"The environment to promote to (one with promoteFrom); needed when the repo has several."`
	Commit      string `query:"commit" maxLength:"40" doc:"The full SHA to promote; default: the commit waiting to be promoted, else the one the source environment runs."`
}

type promoteOutput struct {
	Status int
	Body   struct {
		Message string `json:"message" doc:"What was queued."`
		Commit  string `json:"commit" doc:"The commit asked to be promoted."`
		From    string `json:"from" doc:"The environment it must have succeeded in, with the same images."`
	}
}

var fullSHA = regexp.MustCompile(`^[0-9a-f]{40}$`)

func (s *Server) registerPromote() {
	huma.Register(s.api, huma.Operation{OperationID: "promote", Method: http.MethodPost, Path: "/deployment/{owner}/{repo}/promote", DefaultStatus: http.StatusAccepted,
		Summary: "Promote a commit to an environment",
		Description: "Queues the deployment of a commit to an environment with promoteFrom. It is deployed only if the commit succeeded in the source environment and renders to exactly the images that ran there; " +
			"otherwise its record is blocked, with the difference in its error. Follow it in the environment's status or history.",
		Tags: []string{"deployments"}, Security: []map[string][]string{{"bearer": {}}},
		Errors: []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound, http.StatusConflict, http.StatusServiceUnavailable}}, s.promote)
}

func (s *Server) promote(ctx context.Context, in *promoteInput) (*promoteOutput, error) {
	e, err := s.one(in.Owner, in.Repo, in.Environment)
	if err != nil {
		return nil, err
	}
	name := e.Repo.Name + " (" + e.Repo.Environment + ")"
	if !e.Repo.Promotes() {
		return nil, huma.Error409Conflict(name + " does not promote from another environment: set promoteFrom in repos.yaml, or use sync")
	}
	if in.Commit != "" && !fullSHA.MatchString(in.Commit) {
		return nil, huma.Error400BadRequest("commit " + in.Commit + " is not a full 40-character lower-case SHA")
	}
	commit := in.Commit
	if commit == "" {
		commit = s.promotable(e)
	}
	if commit == "" {
		return nil, huma.Error409Conflict("nothing waits to be promoted to " + name + ": give the commit")
	}
	if e.Pause.Paused {
		return nil, huma.Error409Conflict(name + " is paused (" + e.Pause.Reason + "): resume it first")
	}
	if err := s.enqueue(ctx, e, controller.Request{Trigger: controller.TriggerPromote, Commit: commit, Force: true}); err != nil {
		return nil, err
	}
	out := &promoteOutput{Status: http.StatusAccepted}
	out.Body.Commit, out.Body.From = commit, e.Repo.PromoteFrom
	out.Body.Message = "promotion of " + source.ShortSHA(commit) + " from " + e.Repo.PromoteFrom + " to " + name + " queued"
	return out, nil
}

// promotable is the commit a promotion without one means: the one waiting, else the one
// the source environment runs when this deployd serves it.
func (s *Server) promotable(e view.Entry) string {
	if e.Promotion.Commit != "" {
		return e.Promotion.Commit
	}
	src, ok := s.deps.View.Entry(e.Repo.SourceKey())
	if !ok {
		return ""
	}
	for _, r := range src.Records {
		if r.Phase == history.Succeeded {
			return r.Commit.SHA
		}
	}
	return ""
}
