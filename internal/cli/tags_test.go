package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/daemon"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/pkg/client"
)

// TestDeploymentTags runs the daemon with tagDeployments on: each ended deployment's
// annotated tag is on the git server with its message; a push the server refuses leaves
// the deployment succeeded, the refusal shown in the API and counted, and the tag is
// pushed once the server accepts again.
func TestDeploymentTags(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	first := repo.Commit("main", "one", map[string]string{"deploy/manifests/cm.yaml": cm("one")})
	appNS, stateNS := env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+appNS+", interval: 0, timeout: 1m, tagDeployments: true}\n")
	secret := writeFile(t, dir, "secret", "hook-secret\n")
	base, logs, _ := startDaemonWith(t, func(o *daemon.Options) {
		o.Tagging.BackoffBase, o.Tagging.BackoffMax, o.Tagging.MaxAttempts = 50*time.Millisecond, 200*time.Millisecond, 1000
	}, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"),
		"--webhook-secret-file", secret, "--namespace", stateNS, "--public-url", "https://deployd.example")
	c, err := client.NewClientWithResponses(base)
	if err != nil {
		t.Fatal(err)
	}

	// tagOf waits for the tag on the git server and returns its object's text.
	tagOf := func(name, commit string) string {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for repo.Git("for-each-ref", "refs/tags/"+name) == "" {
			if time.Now().After(deadline) {
				t.Fatalf("tag %s never pushed:\n%s", name, logs)
			}
			time.Sleep(50 * time.Millisecond) // polling the git server, with a deadline
		}
		if got := repo.Git("rev-parse", "refs/tags/"+name+"^{commit}"); got != commit {
			t.Errorf("tag %s is on %s, want %s", name, got, commit)
		}
		return repo.Git("cat-file", "-p", "refs/tags/"+name)
	}
	// record waits until the record numbered n satisfies ok, and returns it.
	record := func(n int, ok func(client.Record) bool) client.Record {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			res, err := c.GetHistoryRecordWithResponse(context.Background(), "shop", "web", int64(n), &client.GetHistoryRecordParams{})
			if err != nil {
				t.Fatal(err)
			}
			if res.JSON200 != nil && ok(*res.JSON200) {
				return *res.JSON200
			}
			if time.Now().After(deadline) {
				t.Fatalf("record %d: %s\n%s", n, res.Body, logs)
			}
			time.Sleep(50 * time.Millisecond) // polling the API, with a deadline
		}
	}
	pushed := func(r client.Record) bool { return r.Tag != nil && r.Tag.State == client.RecordTagStatePushed }

	t.Run("a succeeded deployment is tagged Successfully Deployed", func(t *testing.T) {
		body := tagOf("deployment-0001", first)
		for _, want := range []string{"tagger deployd <deployd@localhost>", "\n\nSuccessfully Deployed\n\n",
			"Link: https://deployd.example/deployment/shop/web/history/1?environment=production\n", "Phase: succeeded\n",
			"Started: ", "Ended: ", "Objects:\n  ConfigMap/" + appNS + "/settings: created, Current"} {
			if !strings.Contains(body, want) {
				t.Errorf("tag lacks %q:\n%s", want, body)
			}
		}
		if r := record(1, pushed); r.Tag.Name != "deployment-0001" || r.Tag.Error != nil {
			t.Errorf("record's tag: %+v", *r.Tag)
		}
	})

	t.Run("a refused push leaves the deployment succeeded, shown and counted, and is pushed once accepted", func(t *testing.T) {
		second := repo.Commit("main", "two", map[string]string{"deploy/manifests/cm.yaml": cm("two")})
		repo.RejectPushes(true)
		pushHook(t, base, "hook-secret", "shop/web")
		r := record(2, func(r client.Record) bool { return r.Tag != nil && r.Tag.Attempts >= 2 })
		if r.Phase != client.RecordPhaseSucceeded || r.Commit.Sha != second || r.Tag.State != client.RecordTagStatePending ||
			r.Tag.Error == nil || !strings.Contains(*r.Tag.Error, "the server refused it") || !strings.Contains(*r.Tag.Error, "pre-receive hook declined") {
			t.Errorf("record while the server refuses: phase %s, tag %+v", r.Phase, *r.Tag)
		}
		if n := metric(t, base, "deployd_tag_push_failures_total"); n < 2 {
			t.Errorf("deployd_tag_push_failures_total = %v, want at least 2", n)
		}
		repo.RejectPushes(false)
		if body := tagOf("deployment-0002", second); !strings.Contains(body, "Successfully Deployed") {
			t.Errorf("tag:\n%s", body)
		}
		if r := record(2, pushed); r.Phase != client.RecordPhaseSucceeded {
			t.Errorf("phase %s after the tag", r.Phase)
		}
	})

	t.Run("a failed deployment is tagged Failed Deployment", func(t *testing.T) {
		third := repo.Commit("main", "never ready", map[string]string{"deploy/manifests/web.yaml": stuckDeployment(2)})
		pushHook(t, base, "hook-secret", "shop/web")
		body := tagOf("deployment-0003", third)
		for _, want := range []string{"\n\nFailed Deployment\n\n", "Phase: failed\n", "Error: ", "Deployment/" + appNS + "/web: created, Failed"} {
			if !strings.Contains(body, want) {
				t.Errorf("tag lacks %q:\n%s", want, body)
			}
		}
		if r := record(3, pushed); r.Phase != client.RecordPhaseFailed {
			t.Errorf("phase %s", r.Phase)
		}
	})
}

// metric reads a counter without labels from /metrics.
func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s in /metrics", name)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestDeploymentTagsAcrossARestart: tags the git server refused until deployd stopped
// (their pending state is in the state ConfigMap) are pushed by the next start; a repo in
// several environments gets its tags prefixed.
func TestDeploymentTagsAcrossARestart(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	shas := []string{repo.Commit("main", "one", map[string]string{"deploy/manifests/cm.yaml": cm("one")})}
	repo.RejectPushes(true)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n"+
		"  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+env.Namespace(t)+", environment: dev, interval: 0, tagDeployments: true}\n"+
		"  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+env.Namespace(t)+", environment: production, interval: 0, tagDeployments: true}\n")
	secret := writeFile(t, dir, "secret", "hook-secret\n")
	args := []string{"--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"), "--namespace", env.Namespace(t),
		"--webhook-secret-file", secret}
	fast := func(o *daemon.Options) {
		o.Tagging.BackoffBase, o.Tagging.BackoffMax = 50*time.Millisecond, 100*time.Millisecond
	}
	environments := []string{"dev", "production"}

	// tagState waits until record n of environment has a tag satisfying ok.
	tagState := func(c *client.ClientWithResponses, logs fmt.Stringer, environment string, n int, ok func(client.RecordTag) bool) client.RecordTag {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			res, err := c.GetHistoryRecordWithResponse(context.Background(), "shop", "web", int64(n), &client.GetHistoryRecordParams{Environment: &environment})
			if err != nil {
				t.Fatal(err)
			}
			if r := res.JSON200; r != nil && r.Phase == client.RecordPhaseSucceeded && r.Tag != nil && ok(*r.Tag) {
				return *r.Tag
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s record %d: %s\n%s", environment, n, res.Body, logs)
			}
			time.Sleep(50 * time.Millisecond) // polling the API, with a deadline
		}
	}
	refused := func(tg client.RecordTag) bool { return tg.Attempts >= 1 && tg.State == client.RecordTagStatePending }

	base, logs, stop := startDaemonWith(t, fast, args...)
	c, err := client.NewClientWithResponses(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range environments {
		if tg := tagState(c, logs, e, 1, refused); tg.Name != e+"/deployment-0001" {
			t.Errorf("%s: tag %+v, want %s/deployment-0001", e, tg, e)
		}
	}
	shas = append(shas, repo.Commit("main", "two", map[string]string{"deploy/manifests/cm.yaml": cm("two")}))
	pushHook(t, base, "hook-secret", "shop/web")
	for _, e := range environments {
		tagState(c, logs, e, 2, refused)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if refs := repo.Git("for-each-ref", "refs/tags"); refs != "" {
		t.Fatalf("tags pushed while the server refused them: %s", refs)
	}

	repo.RejectPushes(false)
	base, logs, _ = startDaemonWith(t, fast, args...)
	if c, err = client.NewClientWithResponses(base); err != nil {
		t.Fatal(err)
	}
	for _, e := range environments {
		for n, sha := range shas {
			name := fmt.Sprintf("%s/deployment-%04d", e, n+1)
			tagState(c, logs, e, n+1, func(tg client.RecordTag) bool { return tg.State == client.RecordTagStatePushed })
			if got := repo.Git("rev-parse", "refs/tags/"+name+"^{commit}"); got != sha {
				t.Errorf("%s is on %s, want %s", name, got, sha)
			}
		}
	}
}
