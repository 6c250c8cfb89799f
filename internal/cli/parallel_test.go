package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/pkg/client"
)

// TestWaitsHoldNoWorker: with one worker, four repos whose rollouts never finish all get
// applied and wait side by side; a waiting deployment does not hold the worker.
func TestWaitsHoldNoWorker(t *testing.T) {
	srv := gittest.NewServer(t)
	stuck := stuckDeployment(600)
	var repos strings.Builder
	repos.WriteString("repos:\n")
	for i := range 4 {
		name := fmt.Sprintf("shop/app%d", i)
		srv.NewRepo(t, name).Commit("main", "stuck", map[string]string{"deploy/manifests/web.yaml": stuck})
		fmt.Fprintf(&repos, "  - {name: %s, url: '%s', namespace: %s, interval: 0, timeout: 10m}\n", name, srv.RepoURL(name), env.Namespace(t))
	}
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", repos.String())
	base, logs, _ := startDaemon(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"),
		"--namespace", env.Namespace(t), "--concurrency", "1")
	c, _ := client.NewClientWithResponses(base)
	waiting := client.ListDeploymentsParamsPhase("waiting")
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := c.ListDeploymentsWithResponse(context.Background(), &client.ListDeploymentsParams{Phase: &waiting})
		if err == nil && res.JSON200 != nil && len(res.JSON200.Deployments) == 4 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not all four waiting with one worker: %s\n%s", res.Body, logs)
		}
		time.Sleep(100 * time.Millisecond) // polling the API under test, with a deadline
	}
}
