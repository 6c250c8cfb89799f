package cli

import (
	"context"
	"encoding/json"
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

// records reads the repo's history straight from its state ConfigMap.
func records(t *testing.T, ns string, repo config.Repo) []history.Record {
	t.Helper()
	cm, err := env.Client.CoreV1().ConfigMaps(ns).Get(context.Background(), repo.StateName(), metav1.GetOptions{})
	if err != nil {
		return nil
	}
	var recs []history.Record
	_ = json.Unmarshal([]byte(cm.Data["history"]), &recs)
	return recs
}

func waitRecords(t *testing.T, ns string, repo config.Repo, what string, cond func([]history.Record) bool) []history.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var recs []history.Record
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		recs = records(t, ns, repo)
		return cond(recs), nil
	})
	if err != nil {
		t.Fatalf("%s: history %+v", what, recs)
	}
	return recs
}

// TestSIGKILLMidWait kills a deployd process while a rollout is being waited for, starts
// another, and sees the record marked interrupted, the repo deployed again, the inventory intact.
func TestSIGKILLMidWait(t *testing.T) {
	srv := gittest.NewServer(t)
	stuck := stuckDeployment(600)
	srv.NewRepo(t, "shop/web").Commit("main", "one", map[string]string{"deploy/manifests/web.yaml": stuck})
	appNS, stateNS := env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+appNS+", interval: 0, timeout: 10m}\n")
	repo := config.Repo{Name: "shop/web", Environment: "production"}
	args := "--config " + cfg + " --kubeconfig " + env.Kubeconfig + " --listen 127.0.0.1:0 --cache-dir " + filepath.Join(dir, "cache") + " --namespace " + stateNS

	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), childEnv+"="+args)
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	// A deployment is stored when it starts (applying) and when it ends; the inventory
	// holding the Deployment says the apply is done and the rollout is being waited for.
	waitRecords(t, stateNS, repo, "first deployment waiting", func(r []history.Record) bool {
		if len(r) != 1 || r[0].Phase != history.Applying {
			return false
		}
		cm, err := env.Client.CoreV1().ConfigMaps(stateNS).Get(context.Background(), repo.StateName(), metav1.GetOptions{})
		return err == nil && strings.Contains(cm.Data["inventory"], `"kind":"Deployment"`)
	})
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()

	_, logs, _ := startDaemon(t, strings.Fields(strings.Replace(args, "--listen 127.0.0.1:0 ", "", 1))...)
	recs := waitRecords(t, stateNS, repo, "interrupted and redeployed", func(r []history.Record) bool {
		return len(r) == 2 && r[0].Phase == history.Error && r[1].Number == 2 && r[1].Phase == history.Applying
	})
	if !strings.HasPrefix(recs[0].Error, "interrupted") || recs[1].Trigger != "startup" {
		t.Errorf("records %+v\n%s", recs, logs)
	}
	cm, err := env.Client.CoreV1().ConfigMaps(stateNS).Get(context.Background(), repo.StateName(), metav1.GetOptions{})
	if err != nil || !strings.Contains(cm.Data["inventory"], `"kind":"Deployment"`) {
		t.Errorf("inventory after the restart: %v %v", cm.Data["inventory"], err)
	}
}
