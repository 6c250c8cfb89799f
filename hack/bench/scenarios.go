package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/pkg/client"
)

// pushApplied is scenario 1: push, webhook, and the changed ConfigMap visible through the
// API server; against the bare work by hand (git fetch + kubectl apply --server-side).
func (e *env) pushApplied(ctx context.Context, d *daemon, repo *gittest.Repo, r *results) error {
	const name, ns, baseNS = "bench/push", "bench-push", "bench-baseline"
	if _, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: baseNS}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	clone := filepath.Join(e.dir, "baseline-clone")
	if err := run(ctx, e.dir, "git", "clone", "-q", e.git.RepoURL(name), clone); err != nil {
		return err
	}
	var deployd, baseline []time.Duration
	for i := 0; i <= e.opts.runs; i++ { // run 0 warms both up
		value := fmt.Sprintf("run-%d-%d", i, time.Now().UnixNano())
		sha := repo.Commit("main", "bench: "+value, app(appOptions{value: value, replicas: 1}))

		seen, err := e.watchValue(ctx, ns, value)
		if err != nil {
			return err
		}
		start := time.Now()
		if err := e.push(ctx, d, name, sha); err != nil {
			return err
		}
		at, err := seen(30 * time.Second)
		if err != nil {
			return fmt.Errorf("push %d: deployd: %w", i, err)
		}
		took := at.Sub(start)
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err = d.waitFor(wctx, 20*time.Millisecond, deployedAt(name, sha))
		cancel()
		if err != nil {
			return fmt.Errorf("push %d: waiting for deployd to finish: %w", i, err)
		}

		if seen, err = e.watchValue(ctx, baseNS, value); err != nil {
			return err
		}
		start = time.Now()
		for _, args := range [][]string{{"fetch", "-q", "origin", "main"}, {"reset", "-q", "--hard", "FETCH_HEAD"}} {
			if err := run(ctx, clone, "git", args...); err != nil {
				return err
			}
		}
		if err := run(ctx, clone, e.kubectl, "--kubeconfig", e.cluster.Kubeconfig, "apply", "--server-side",
			"--field-manager", "bench-baseline", "-n", baseNS, "-f", filepath.Join(clone, "deploy", "manifests")); err != nil {
			return err
		}
		at, err = seen(30 * time.Second)
		if err != nil {
			return fmt.Errorf("push %d: baseline: %w", i, err)
		}
		if i > 0 {
			deployd, baseline = append(deployd, took), append(baseline, at.Sub(start))
		}
		progress("push → applied %d/%d: deployd %s, baseline %s", i, e.opts.runs, ms(took), ms(at.Sub(start)))
	}
	dm, bm := median(deployd), median(baseline)
	r.add(1, "push → applied, deployd", series(deployd), "≤ 150 ms", dm <= 150*time.Millisecond)
	r.add(1, "push → applied, bare git fetch + kubectl apply", series(baseline), "", nil)
	r.add(1, "deployd ÷ baseline (medians)", ratio(dm, bm), "≤ 1.5", float64(dm)/float64(bm) <= 1.5)
	return nil
}

// deployedAt says whether repo's newest deployment is sha and succeeded.
func deployedAt(repo, sha string) func(map[string]client.Summary) bool {
	return func(s map[string]client.Summary) bool {
		got, ok := s[repo]
		return ok && got.Phase == "succeeded" && got.DeployedCommit != nil && *got.DeployedCommit == sha
	}
}

// rolloutReported is scenario 2: from the last pod of a rollout turning Ready to deployd's
// API (its event stream) and the GitHub stand-in saying success.
func (e *env) rolloutReported(ctx context.Context, d *daemon, repo *gittest.Repo, r *results) error {
	const name, ns, replicas = "bench/rollout", "bench-rollout", 2
	var toAPI, toGitHub, toStatus []time.Duration
	for i := 0; i <= e.opts.runs; i++ {
		runID := fmt.Sprintf("r%d-%d", i, time.Now().UnixNano())
		sha := repo.Commit("main", "bench: roll out "+runID, app(appOptions{value: "rollout", replicas: replicas, run: runID, recreate: true}))
		ready, err := e.watchPodsReady(ctx, ns, runID, replicas)
		if err != nil {
			return err
		}
		complete, err := e.watchComplete(ctx, ns, runID)
		if err != nil {
			return err
		}
		sctx, stop := context.WithCancel(ctx)
		events, err := d.follow(sctx, name)
		if err != nil {
			stop()
			return err
		}
		if err := e.push(ctx, d, name, sha); err != nil {
			stop()
			return err
		}
		readyAt, err := ready(time.Minute)
		if err != nil {
			stop()
			return fmt.Errorf("rollout %d: pods: %w", i, err)
		}
		completeAt, err := complete(time.Minute)
		if err != nil {
			stop()
			return fmt.Errorf("rollout %d: Deployment status: %w", i, err)
		}
		apiAt, err := succeeded(events, sha, time.Minute)
		stop()
		if err != nil {
			return fmt.Errorf("rollout %d: deployd API: %w", i, err)
		}
		gctx, cancel := context.WithTimeout(ctx, time.Minute)
		ghAt, err := e.waitGitHub(gctx, name, sha)
		cancel()
		if err != nil {
			return err
		}
		if i > 0 {
			toAPI = append(toAPI, apiAt.Sub(readyAt))
			toGitHub = append(toGitHub, ghAt.Sub(readyAt))
			toStatus = append(toStatus, completeAt.Sub(readyAt))
		}
		progress("rollout → reported %d/%d: API %s, GitHub %s after the last pod was Ready", i, e.opts.runs, ms(apiAt.Sub(readyAt)), ms(ghAt.Sub(readyAt)))
	}
	r.add(2, "last pod Ready → deployd API says succeeded", series(toAPI), "≤ 200 ms", median(toAPI) <= 200*time.Millisecond)
	r.add(2, "last pod Ready → GitHub success status", series(toGitHub), "≤ 200 ms", median(toGitHub) <= 200*time.Millisecond)
	r.add(2, "of which: last pod Ready → Deployment status complete (controller-manager)", series(toStatus), "", nil)
	return nil
}

// succeeded waits on a repo's event stream for sha's deployment to succeed.
func succeeded(events <-chan deploymentEvent, sha string, timeout time.Duration) (time.Time, error) {
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return time.Time{}, fmt.Errorf("event stream ended")
			}
			if ev.Record.Commit.SHA == sha && ev.Record.Phase == "succeeded" {
				return ev.at, nil
			}
		case <-deadline:
			return time.Time{}, fmt.Errorf("no success for %s within %s", sha[:12], timeout)
		}
	}
}

// manyAtOnce is scenario 4: one repo configured alone, then 50 at once, each a 1-replica
// Deployment and a ConfigMap: time until all are rolled out and reported.
func (e *env) manyAtOnce(ctx context.Context, d *daemon, base []repoEntry, template *gittest.Repo, n int, r *results) ([]repoEntry, error) {
	one, err := e.copyRepos(template, "bench/one", 1)
	if err != nil {
		return nil, err
	}
	many, err := e.copyRepos(template, "bench/many", n)
	if err != nil {
		return nil, err
	}
	sha := template.Head()
	measure := func(cfg, repos []repoEntry) (api, gh time.Duration, err error) {
		start := time.Now()
		if err := writeConfig(d.config, cfg); err != nil {
			return 0, 0, err
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		at, err := d.waitFor(wctx, 20*time.Millisecond, func(s map[string]client.Summary) bool {
			for _, repo := range repos {
				if !deployedAt(repo.Name, sha)(s) {
					return false
				}
			}
			return true
		})
		if err != nil {
			return 0, 0, err
		}
		var last time.Time
		for _, repo := range repos {
			t, err := e.waitGitHub(wctx, repo.Name, sha)
			if err != nil {
				return 0, 0, err
			}
			last = later(last, t)
		}
		return at.Sub(start), last.Sub(start), nil
	}
	cfg := append(append([]repoEntry{}, base...), one...)
	oneAPI, oneGH, err := measure(cfg, one)
	if err != nil {
		return nil, fmt.Errorf("one repo: %w", err)
	}
	progress("one repo: rolled out in %s, reported in %s", ms(oneAPI), ms(oneGH))
	cfg = append(cfg, many...)
	manyAPI, manyGH, err := measure(cfg, many)
	if err != nil {
		return nil, fmt.Errorf("%d repos: %w", n, err)
	}
	progress("%d repos: rolled out in %s, reported in %s", n, ms(manyAPI), ms(manyGH))
	r.add(4, "1 repo: configured → rolled out (API)", single(oneAPI), "", nil)
	r.add(4, "1 repo: configured → reported (GitHub)", single(oneGH), "", nil)
	r.add(4, fmt.Sprintf("%d repos at once: configured → all rolled out (API)", n), single(manyAPI), "", nil)
	r.add(4, fmt.Sprintf("%d repos at once: configured → all reported (GitHub)", n), single(manyGH), "", nil)
	r.add(4, fmt.Sprintf("%d repos ÷ 1 repo (reported)", n), ratio(manyGH, oneGH), "≤ 2", float64(manyGH) <= 2*float64(oneGH))
	return cfg, nil
}

// copyRepos serves n copies of template's repository as prefix-0001…; copying the bare
// repository is much faster than committing n times.
func (e *env) copyRepos(template *gittest.Repo, prefix string, n int) ([]repoEntry, error) {
	out := make([]repoEntry, n)
	for i := range n {
		name := fmt.Sprintf("%s-%04d", prefix, i+1)
		if n == 1 {
			name = prefix
		}
		dst := filepath.Join(e.git.Root, name+".git")
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		if err := run(context.Background(), e.dir, "cp", "-a", template.Bare, dst); err != nil {
			return nil, err
		}
		out[i] = repoEntry{Name: name, URL: e.git.RepoURL(name), Namespace: strings.ReplaceAll(name, "/", "-")}
	}
	return out, nil
}

// coldStart is scenario 5: deployd starts with n repos of 10 objects, none deployed.
func (e *env) coldStart(ctx context.Context, repos []repoEntry, r *results) (*daemon, error) {
	d, err := e.startDeployd("cold", repos)
	if err != nil {
		return nil, err
	}
	readyAt, err := waitReady(ctx, d)
	if err != nil {
		return d, err
	}
	progress("/readyz ready after %s", ms(readyAt.Sub(d.started)))
	if e.opts.profile != "" {
		go e.profile(ctx, d, "cpu-cold-start", "profile?seconds=30")
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	lastSay := time.Now()
	var err2 error
	allAt, err2 := d.waitFor(wctx, 250*time.Millisecond, func(s map[string]client.Summary) bool {
		done := 0
		for _, repo := range repos {
			if s[repo.Name].Phase == "succeeded" {
				done++
			}
		}
		if time.Since(lastSay) > 10*time.Second {
			progress("cold start: %d/%d deployed after %s", done, len(repos), time.Since(d.started).Round(time.Second))
			lastSay = time.Now()
		}
		return done == len(repos)
	})
	if err2 != nil {
		return d, fmt.Errorf("cold start: %w", err2)
	}
	if e.opts.profile != "" {
		e.profile(ctx, d, "heap-cold-start", "heap")
	}
	took := allAt.Sub(d.started)
	objects := 10 * len(repos)
	progress("cold start: %d repos (%d objects) deployed in %s", len(repos), objects, took.Round(100*time.Millisecond))
	r.add(5, fmt.Sprintf("%d repos × 10 objects: start → all rolled out", len(repos)), single(took), "≤ 120 s", took <= 120*time.Second)
	r.add(5, "objects applied per second", value(float64(objects)/took.Seconds(), "objects/s"), "", nil)
	r.add(5, "start → /readyz ready", single(readyAt.Sub(d.started)), "≤ 10 s", readyAt.Sub(d.started) <= 10*time.Second)
	return d, nil
}

func waitReady(ctx context.Context, d *daemon) (time.Time, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.addr+"/readyz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Now(), nil
			}
		}
		time.Sleep(20 * time.Millisecond) // polling the process under test, with a deadline
	}
	return time.Time{}, fmt.Errorf("/readyz not ready within 2 minutes\n%s", d.tail())
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
