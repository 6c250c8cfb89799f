package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/deployd/deployd/internal/preview"
	"github.com/deployd/deployd/internal/webhook"
	"github.com/deployd/deployd/pkg/client"
)

// previewReady is scenario 12: a pull request of the 10-object app (a new replica count
// and ConfigMap value) opened, its pull_request webhook sent, until deployd's API serves
// its finished preview: fetch of refs/pull/N/head, render, dry run of the set, diff.
func (e *env) previewReady(ctx context.Context, r *results) error {
	const name, ns = "bench/preview", "bench-preview"
	repo := e.git.NewRepo(e.tb, name)
	repo.Commit("main", "first", app(appOptions{value: "first", replicas: 1}))
	d, err := e.startDeployd("preview", []repoEntry{{Name: name, URL: e.git.RepoURL(name), Namespace: ns}})
	if err != nil {
		return err
	}
	defer d.stop()
	if _, err := waitReady(ctx, d); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	_, err = d.waitFor(wctx, 50*time.Millisecond, func(s map[string]client.Summary) bool { return s[name].Phase == "succeeded" })
	cancel()
	if err != nil {
		return fmt.Errorf("first deployment of %s: %w", name, err)
	}
	var took []time.Duration
	for i := 0; i <= e.opts.runs; i++ { // run 0 warms up (the previews' own git cache is cloned)
		number := i + 1
		repo.Checkout("main")
		branch := fmt.Sprintf("pr-%d", number)
		repo.Commit(branch, "bench: "+branch, app(appOptions{value: branch, replicas: 2}))
		sha := repo.PullRequest(number, branch)
		start := time.Now()
		if err := e.pullRequest(ctx, d, name, number, sha); err != nil {
			return err
		}
		res, err := waitPreview(ctx, d, name, number, sha)
		if err != nil {
			return fmt.Errorf("pull request %d: %w\n%s", number, err, d.tail())
		}
		if res.State != preview.StateDone || len(res.Changed) != 2 {
			return fmt.Errorf("pull request %d: preview %s: %s, want 2 objects changed", number, res.State, preview.Title(res))
		}
		if i > 0 {
			took = append(took, time.Since(start))
		}
		progress("pull request → preview %d/%d: %s", i, e.opts.runs, ms(time.Since(start)))
	}
	r.add(12, "pull_request webhook → preview served (10-object app: fetch, render, dry run, diff)", series(took), "≤ 1 s", median(took) <= time.Second)
	return nil
}

// pullRequest sends a signed pull_request "synchronize" webhook against main.
func (e *env) pullRequest(ctx context.Context, d *daemon, repo string, number int, sha string) error {
	body := []byte(fmt.Sprintf(`{"action":"synchronize","number":%d,"pull_request":{"head":{"sha":%q},"base":{"ref":"main"}},"repository":{"full_name":%q}}`, number, sha, repo))
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+d.addr+"/webhooks/github", bytes.NewReader(body))
	req.Header.Set("X-GitHub-Event", "pull_request")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", webhook.Signature([]byte(e.secret), body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("pull_request webhook answered %s", resp.Status)
	}
	return nil
}

// waitPreview polls the preview of pull request number until its head's has ended.
func waitPreview(ctx context.Context, d *daemon, repo string, number int, sha string) (preview.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/deployment/%s/previews/%d", d.addr, repo, number), nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			var p preview.Preview
			ok := resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&p) == nil
			resp.Body.Close()
			if ok && len(p.Environments) == 1 && p.Environments[0].Commit == sha && p.Environments[0].State != preview.StatePending {
				return p.Environments[0], nil
			}
		}
		select {
		case <-ctx.Done():
			return preview.Result{}, fmt.Errorf("no finished preview within 30s: %w", ctx.Err())
		case <-tick.C:
		}
	}
}
