package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
)

// deploymentStatusEvent is the part of GitHub's deployment_status payload deployd reads.
type deploymentStatusEvent struct {
	DeploymentStatus struct {
		State string `json:"state"`
	} `json:"deployment_status"`
	Deployment struct {
		SHA         string `json:"sha"`
		Environment string `json:"environment"`
	} `json:"deployment"`
	Repository repository `json:"repository"`
}

// deploymentStatus tells the entries that promote from another cluster's environment
// that it succeeded with a commit, so an auto promotion need not wait for the next poll.
// It only asks for a check: the promotion gate reads GitHub itself, so a forged or
// replayed event deploys nothing the gate would not.
func (h *Handler) deploymentStatus(ctx context.Context, payload []byte) (int, string, []config.Key) {
	var ev deploymentStatusEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		return http.StatusBadRequest, "deployment_status payload is not valid JSON: " + err.Error(), nil
	}
	d := ev.Deployment
	if ev.DeploymentStatus.State != "success" {
		return http.StatusAccepted, fmt.Sprintf("deployment status %q: deployd acts only on success; ignored", ev.DeploymentStatus.State), nil
	}
	if len(d.SHA) != 40 {
		return http.StatusBadRequest, "deployment_status payload lacks a full deployment.sha", nil
	}
	cfg := h.queue.Config()
	urls := ev.Repository.urls()
	var queued []config.Key
	for _, repo := range cfg.Repos {
		if !sameRepo(repo, ev.Repository.FullName, urls) || !strings.EqualFold(repo.PromoteFrom, d.Environment) {
			continue
		}
		if _, local := cfg.PromotionSource(repo); local {
			continue // this deployd tells its own entries at once
		}
		req := controller.Request{Trigger: controller.TriggerPromoteAuto, Commit: d.SHA, Note: d.Environment + " succeeded with " + d.SHA[:12] + " (GitHub)"}
		if err := h.queue.Enqueue(ctx, repo.Key(), req); err != nil {
			return http.StatusServiceUnavailable, fmt.Sprintf("promotion check of %s not queued, send it again: %v", d.SHA[:12], err), queued
		}
		queued = append(queued, repo.Key())
	}
	if len(queued) == 0 {
		return http.StatusAccepted, fmt.Sprintf("no entry promotes from %q of %s here; ignored", d.Environment, ev.Repository.FullName), nil
	}
	return http.StatusAccepted, fmt.Sprintf("%s succeeded in %s: promotion check queued", d.SHA[:12], d.Environment), queued
}
