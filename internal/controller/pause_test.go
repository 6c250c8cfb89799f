package controller_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/webhook"
)

// TestPauseHoldsGitHubDeployments: after a rollback pauses a repo, a signed GitHub
// deployment of another commit (a replayed old delivery, say) is checked but not
// deployed; only a rollback goes through the pause.
func TestPauseHoldsGitHubDeployments(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "a/app")
	old := repo.Commit("main", "one", manifests)
	head := repo.Commit("main", "two", map[string]string{"deploy/manifests/cm.yaml": "kind: ConfigMap\nmetadata: {name: two}\n"})
	h := start(t, "repos:\n"+repoLine("a/app", srv.RepoURL("a/app"), ", interval: 0"), controller.DefaultOptions())
	h.rec.waitFor(t, 10*time.Second, "startup deploy", deployedCommit("a/app", head))
	key := config.Key{Name: "a/app", Environment: "dev"}
	h.ctl.SetPaused(key, true)

	body := []byte(`{"deployment":{"id":77,"sha":"` + old + `","ref":"v1","environment":"dev"},"repository":{"full_name":"a/app"}}`)
	req := httptest.NewRequest(http.MethodPost, "/webhooks/github", strings.NewReader(string(body)))
	req.Header.Set("X-GitHub-Event", "deployment")
	req.Header.Set("X-Hub-Signature-256", webhook.Signature([]byte(hookSecret), body))
	rec := httptest.NewRecorder()
	webhookHandler(t, h.ctl).ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("deployment event: %d %s", rec.Code, rec.Body)
	}
	h.rec.waitFor(t, 10*time.Second, "the GitHub deployment checked", func(_ []controller.Deployment, os []controller.Outcome) bool {
		last := os[len(os)-1]
		return last.Key == key && last.Action == controller.ActionPaused
	})
	h.rec.mu.Lock()
	if deployedCommit("a/app", old)(h.rec.deploys, nil) {
		t.Errorf("a GitHub deployment went through the pause: %v", commits(h.rec.deploys))
	}
	h.rec.mu.Unlock()

	if err := controller.Local(h.ctl).Enqueue(t.Context(), key, controller.Request{Trigger: controller.TriggerRollback, Commit: old, Force: true}); err != nil {
		t.Fatal(err)
	}
	h.rec.waitFor(t, 10*time.Second, "the rollback deployed", deployedCommit("a/app", old))
}
