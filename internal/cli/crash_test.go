package cli

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/history"
)

// TestCrashedTwiceIsNotRedone kills two deployd processes (SIGKILL, as an OOM kill
// would) while they deploy the same commit, the second in its startup redo. The third
// deployd records the commit as "crashed deployd twice" instead of redoing it, keeps
// deploying the other repo, serves the record, and redeploys the commit only when a
// forced sync asks for it.
func TestCrashedTwiceIsNotRedone(t *testing.T) {
	ctx := context.Background()
	srv := gittest.NewServer(t)
	srv.NewRepo(t, "shop/web").Commit("main", "one", map[string]string{"deploy/manifests/web.yaml": stuckDeployment(600)})
	other := srv.NewRepo(t, "shop/other")
	other.Commit("main", "one", map[string]string{"deploy/manifests/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {v: '1'}\n"})
	appNS, otherNS, stateNS := env.Namespace(t), env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n"+
		"  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+appNS+", interval: 0, timeout: 10m}\n"+
		"  - {name: shop/other, url: '"+srv.RepoURL("shop/other")+"', namespace: "+otherNS+", interval: 1s}\n")
	token := writeFile(t, dir, "token", "api-token\n")
	web, otherRepo := config.Repo{Name: "shop/web", Environment: "production"}, config.Repo{Name: "shop/other", Environment: "production"}
	args := "--config " + cfg + " --kubeconfig " + env.Kubeconfig + " --cache-dir " + filepath.Join(dir, "cache") +
		" --namespace " + stateNS + " --api-token-file " + token + " --log-format json"

	// killWhileWaiting SIGKILLs a child once deployment number n of shop/web was applied
	// (the Deployment carries its number) and its rollout, which never ends, is waited for.
	killWhileWaiting := func(child *exec.Cmd, n string) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		err := wait.PollUntilContextCancel(wctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			d, err := env.Client.AppsV1().Deployments(appNS).Get(ctx, "web", metav1.GetOptions{})
			return err == nil && d.Annotations["deployd.dev/deployment"] == n, nil
		})
		if err != nil {
			t.Fatalf("deployment %s was never applied: %+v", n, records(t, stateNS, web))
		}
		if err := child.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = child.Wait()
	}

	first := startChild(t, args+" --listen 127.0.0.1:0", io.Discard)
	killWhileWaiting(first, "1")
	second := startChild(t, args+" --listen 127.0.0.1:0", io.Discard)
	killWhileWaiting(second, "2")
	recs := records(t, stateNS, web)
	if len(recs) != 2 || recs[1].Trigger != "startup" || recs[1].Crashes != 1 {
		t.Fatalf("after the second kill: %+v, want the second record a startup redo with 1 crash", recs)
	}

	base, logs, _ := startDaemon(t, strings.Fields(args)...)
	recs = waitRecords(t, stateNS, web, "the second crash recorded", func(r []history.Record) bool {
		return len(r) == 2 && r[1].Phase == history.Error
	})
	if !strings.HasPrefix(recs[1].Error, "crashed deployd twice") || recs[1].Crashes != 2 || !strings.HasPrefix(recs[0].Error, "interrupted") {
		t.Errorf("records %+v", recs)
	}
	// The startup check of shop/web sees the tree that failed and leaves it.
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := wait.PollUntilContextCancel(lctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return strings.Contains(logs.String(), `"repo":"shop/web","env":"production","trigger":"startup","action":"failed before, waiting for a change"`), nil
	})
	if err != nil {
		t.Fatalf("shop/web's startup check never left the commit:\n%s", logs)
	}
	if recs := records(t, stateNS, web); len(recs) != 2 {
		t.Errorf("the commit was redone: %+v", recs)
	}
	waitStatus(t, base+"/deployment/shop/web", http.StatusOK, "crashed deployd twice")

	t.Run("the other repo keeps deploying", func(t *testing.T) {
		head := other.Commit("main", "two", map[string]string{"deploy/manifests/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {v: '2'}\n"})
		waitRecords(t, stateNS, otherRepo, "the other repo's new commit deployed", func(r []history.Record) bool {
			return len(r) > 0 && r[len(r)-1].Commit.SHA == head && r[len(r)-1].Phase == history.Succeeded
		})
	})
	t.Run("a forced sync deploys the commit again", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, base+"/deployment/shop/web/sync?force=true", nil)
		req.Header.Set("Authorization", "Bearer api-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("sync answered %d", resp.StatusCode)
		}
		recs := waitRecords(t, stateNS, web, "the forced deployment", func(r []history.Record) bool { return len(r) == 3 })
		if recs[2].Trigger != "api" || recs[2].Crashes != 0 {
			t.Errorf("forced record %+v", recs[2])
		}
	})
}

// TestHostileCRDThroughTheDaemon pushes the set that used to end deployd with a nil
// dereference (testdata of internal/apply: a CRD declaring CustomResourceDefinition
// namespaced) next to a normal repo: deployd keeps serving, the bad repo's record names
// the reason, and the other repo deploys.
func TestHostileCRDThroughTheDaemon(t *testing.T) {
	hostile, err := os.ReadFile("../apply/testdata/crd-redefines-crd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srv := gittest.NewServer(t)
	srv.NewRepo(t, "shop/web").Commit("main", "a CRD", map[string]string{"deploy/manifests/crd.yaml": string(hostile)})
	srv.NewRepo(t, "shop/other").Commit("main", "one", map[string]string{"deploy/manifests/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"})
	stateNS := env.Namespace(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n"+
		"  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+env.Namespace(t)+", interval: 1s, allowClusterScoped: true}\n"+
		"  - {name: shop/other, url: '"+srv.RepoURL("shop/other")+"', namespace: "+env.Namespace(t)+", interval: 1s}\n")
	base, _, _ := startDaemon(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"), "--namespace", stateNS)
	recs := waitRecords(t, stateNS, config.Repo{Name: "shop/web", Environment: "production"}, "the CRD refused", func(r []history.Record) bool {
		return len(r) == 1 && r[0].Phase == history.Error
	})
	if !strings.Contains(recs[0].Error, "it defines the kind CustomResourceDefinition of group apiextensions.k8s.io itself: a repo may never redefine it") {
		t.Errorf("record %+v", recs[0])
	}
	waitRecords(t, stateNS, config.Repo{Name: "shop/other", Environment: "production"}, "the other repo deployed", func(r []history.Record) bool {
		return len(r) == 1 && r[0].Phase == history.Succeeded
	})
	waitStatus(t, base+"/deployment/shop/web", http.StatusOK, "a repo may never redefine it")
}
