package cli

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/logtest"
	"github.com/deployd/deployd/pkg/client"
)

// TestWaitForAnOvertakenCommit: a commit pushed and overtaken by a newer push before
// deployd saw it is never deployed itself; wait --commit succeeds with the deployment of
// the newer commit that contains it, and says so.
func TestWaitForAnOvertakenCommit(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	repo.Commit("main", "one", map[string]string{"deploy/manifests/cm.yaml": cm("one")})
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+env.Namespace(t)+", interval: 0, timeout: 1m}\n")
	secret := writeFile(t, dir, "secret", "hook-secret\n")
	base, logs, _ := startDaemon(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"),
		"--webhook-secret-file", secret, "--namespace", env.Namespace(t))
	server := "--server=" + base
	if code, out, errOut := runCLI(t, "wait", "shop/web", "--commit", repo.Head(), server, "--timeout", "60s"); code != 0 {
		t.Fatalf("the first deployment: exit %d\n%s\n%s\n%s", code, out, errOut, logs)
	}

	// Two pushes, one webhook: deployd fetches and deploys only the second.
	overtaken := repo.Commit("main", "two", map[string]string{"deploy/manifests/cm.yaml": cm("two")})
	newer := repo.Commit("main", "three", map[string]string{"deploy/manifests/cm.yaml": cm("three")})

	t.Run("a wait started before deployd saw either succeeds with the newer deployment", func(t *testing.T) {
		type result struct {
			code     int
			out, err string
		}
		done := make(chan result, 1)
		go func() {
			code, out, errOut := runCLI(t, "wait", "shop/web", "--commit", overtaken[:10], server, "--timeout", "60s")
			done <- result{code, out, errOut}
		}()
		pushHook(t, base, "hook-secret", "shop/web")
		r := <-done
		want := overtaken[:12] + " is in " + newer[:12] + ", deployed as deployment-0002\n"
		if r.code != 0 || !strings.Contains(r.out, want) || !strings.Contains(r.out, "deployment-0002 "+newer[:12]+": succeeded") ||
			!strings.Contains(r.out, overtaken[:12]+" was deployed in "+newer[:12]) {
			t.Errorf("exit %d, want 0 and %q\n%s\n%s", r.code, want, r.out, r.err)
		}
	})
	t.Run("deployd never deployed the overtaken commit itself", func(t *testing.T) {
		c, _ := client.NewClientWithResponses(base)
		res, err := c.ListHistoryWithResponse(context.Background(), "shop", "web", &client.ListHistoryParams{})
		if err != nil || res.JSON200 == nil {
			t.Fatalf("%v %s", err, res.Body)
		}
		for _, r := range res.JSON200.Records {
			if r.Commit.Sha == overtaken {
				t.Errorf("%s deployed the overtaken commit: the test does not test what it says", r.Name)
			}
		}
	})
	t.Run("a wait started afterwards succeeds at once", func(t *testing.T) {
		code, out, errOut := runCLI(t, "wait", "shop/web", "--commit", overtaken, server, "--timeout", "10s")
		if code != 0 || !strings.Contains(out, " is in "+newer[:12]) {
			t.Errorf("exit %d\n%s\n%s", code, out, errOut)
		}
	})
	t.Run("a commit deployd has not seen is waited for, and the timeout says where the branch is", func(t *testing.T) {
		unknown := strings.Repeat("ab", 20)
		code, _, errOut := runCLI(t, "wait", "shop/web", "--commit", unknown, server, "--timeout", "2s")
		if code != 2 || !strings.Contains(errOut, "deployd has not seen it on the branch, whose head is "+newer[:12]) {
			t.Errorf("exit %d, want 2 (timeout) and where the branch is\n%s", code, errOut)
		}
	})
	t.Run("once the branch moved to a head whose whole history lacks the commit, the wait fails", func(t *testing.T) {
		// A commit pushed to another branch while the wait runs; main is then rewritten
		// to a new root, whose history deployd reads whole.
		elsewhere := repo.Commit("feature", "elsewhere", map[string]string{"README.md": "x"})
		type result struct {
			code     int
			out, err string
		}
		done := make(chan result, 1)
		var out strings.Builder
		go func() {
			code, o, errOut := runCLI(t, "wait", "shop/web", "--commit", elsewhere, server, "--timeout", "60s")
			out.WriteString(o)
			done <- result{code, o, errOut}
		}()
		rewritten := repo.ForcePush("main", "rewritten", map[string]string{"deploy/manifests/cm.yaml": cm("four")})
		pushHook(t, base, "hook-secret", "shop/web")
		r := <-done
		if r.code != 1 || !strings.Contains(r.err, elsewhere[:12]+" is not on the branch: deployd read the whole history of its head "+rewritten[:12]) {
			t.Errorf("exit %d, want 1 and not on the branch\n%s\n%s\n%s", r.code, r.out, r.err, logs)
		}
	})
	t.Run("a deployment superseded by one that contains the commit hands the wait over", func(t *testing.T) {
		stuck := repo.Commit("main", "never ready", map[string]string{"deploy/manifests/web.yaml": stuckDeployment(600)})
		type result struct {
			code     int
			out, err string
		}
		done := make(chan result, 1)
		var out logtest.Buffer
		go func() {
			var errOut strings.Builder
			err := Run(context.Background(), []string{"wait", "shop/web", "--commit", stuck, server, "--timeout", "60s"}, &out, &errOut)
			code := 0
			var exit *ExitError
			if errors.As(err, &exit) {
				code = exit.Code
			}
			done <- result{code, out.String(), errOut.String()}
		}()
		pushHook(t, base, "hook-secret", "shop/web")
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(out.String(), stuck[:12]+": waiting") {
			if time.Now().After(deadline) {
				t.Fatalf("wait never saw the stuck deployment waiting: %s\n%s", out.String(), logs)
			}
			time.Sleep(50 * time.Millisecond) // polling the command's output, with a deadline
		}
		fix := repo.Commit("main", "fixed", map[string]string{"deploy/manifests/web.yaml": ""})
		pushHook(t, base, "hook-secret", "shop/web")
		r := <-done
		if r.code != 0 || !strings.Contains(r.out, stuck[:12]+": superseded") || !strings.Contains(r.out, stuck[:12]+" is in "+fix[:12]) ||
			!strings.Contains(r.out, fix[:12]+": succeeded") {
			t.Errorf("exit %d, want 0 after the hand-over\n%s\n%s", r.code, r.out, r.err)
		}
	})
}
