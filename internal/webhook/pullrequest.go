package webhook

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/preview"
)

// Previews takes pull request events (preview.Service does).
type Previews interface {
	Enqueue(pr preview.PullRequest)
}

// SetPreviews makes the handler queue previews of pull requests; without it they are ignored.
func (h *Handler) SetPreviews(p Previews) { h.previews = p }

// pullRequestEvent is the part of GitHub's pull_request payload deployd reads. The head
// repository (a fork's, anyone's) is not read: the head is fetched as refs/pull/N/head
// from the configured repo's own URL, which GitHub keeps for forks too.
type pullRequestEvent struct {
	Action      string `json:"action"`
	Number      int    `json:"number"`
	PullRequest struct {
		Head struct {
			SHA string `json:"sha"`
		} `json:"head"`
		Base struct {
			Ref string `json:"ref"`
		} `json:"base"`
	} `json:"pull_request"`
	Repository repository `json:"repository"`
}

// pullRequest queues the preview of an opened, pushed to or reopened pull request for
// each entry of the repo whose branch is its base, and its removal when it is closed.
func (h *Handler) pullRequest(payload []byte) (int, string, []config.Key) {
	var ev pullRequestEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		return http.StatusBadRequest, "pull_request payload is not valid JSON: " + err.Error(), nil
	}
	closed := ev.Action == "closed"
	switch {
	case ev.Action != "opened" && ev.Action != "synchronize" && ev.Action != "reopened" && !closed:
		return http.StatusOK, fmt.Sprintf("pull request action %q is not one deployd previews; ignored", cut(ev.Action)), nil
	case ev.Number <= 0 || (!closed && len(ev.PullRequest.Head.SHA) != 40):
		return http.StatusBadRequest, "pull_request payload lacks number or a full pull_request.head.sha", nil
	case h.previews == nil:
		return http.StatusOK, "pull request previews are off; ignored", nil
	}
	// One pull request per configured name: entries matched by URL may name it otherwise.
	var prs []*preview.PullRequest
	byName := map[string]*preview.PullRequest{}
	var keys []config.Key
	for _, repo := range h.queue.Config().Repos {
		if !sameRepo(repo, ev.Repository.FullName, ev.Repository.urls()) || repo.Branch != ev.PullRequest.Base.Ref {
			continue
		}
		pr := byName[repo.Key().Name]
		if pr == nil {
			pr = &preview.PullRequest{Repo: repo.Name, Number: ev.Number, HeadSHA: strings.ToLower(ev.PullRequest.Head.SHA), Closed: closed}
			byName[repo.Key().Name] = pr
			prs = append(prs, pr)
		}
		pr.Entries = append(pr.Entries, repo)
		keys = append(keys, repo.Key())
	}
	if len(prs) == 0 {
		return http.StatusOK, fmt.Sprintf("no configured entry of %s deploys branch %s; ignored", cut(ev.Repository.FullName), cut(ev.PullRequest.Base.Ref)), nil
	}
	for _, pr := range prs {
		h.previews.Enqueue(*pr)
	}
	if closed {
		return http.StatusAccepted, fmt.Sprintf("pull request #%d closed: its preview is removed", ev.Number), keys
	}
	return http.StatusAccepted, fmt.Sprintf("preview of pull request #%d queued", ev.Number), keys
}
