package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/logtest"
)

// records reads the repo's history straight from its state ConfigMap.
func records(t *testing.T, ns string, repo config.Repo) []history.Record {
	t.Helper()
	recs, _ := storedRecordsOf(context.Background(), env.Client, ns, repo)
	return recs
}

// storedRecordsOf reads the repo's history from its state ConfigMap, oldest first.
func storedRecordsOf(ctx context.Context, kube kubernetes.Interface, ns string, repo config.Repo) ([]history.Record, error) {
	cm, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, repo.StateName(), metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var recs []history.Record
	if err := json.Unmarshal([]byte(cm.Data["history"]), &recs); err != nil {
		return nil, err
	}
	return recs, nil
}

// inventoryOf reads the names of the objects in the repo's stored inventory.
func inventoryOf(t *testing.T, kube kubernetes.Interface, ns string, repo config.Repo) map[string]bool {
	t.Helper()
	cm, err := kube.CoreV1().ConfigMaps(ns).Get(context.Background(), repo.StateName(), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the inventory: %v", err)
	}
	var refs []apply.Ref
	if err := json.Unmarshal([]byte(cm.Data["inventory"]), &refs); err != nil {
		t.Fatalf("the inventory is not valid: %v\n%s", err, cm.Data["inventory"])
	}
	names := map[string]bool{}
	for _, r := range refs {
		names[r.Name] = true
	}
	return names
}

// startChild runs deployd with args as a child process (the test binary, see TestMain),
// so a test can SIGKILL it; it is killed at the test's end if still running.
func startChild(t *testing.T, args string, stderr io.Writer) *exec.Cmd {
	t.Helper()
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), childEnv+"="+args)
	child.Stdout, child.Stderr = io.Discard, stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	return child
}

// waitRecords waits up to 30 s for the stored history to meet cond.
func waitRecords(t *testing.T, ns string, repo config.Repo, what string, cond func([]history.Record) bool) []history.Record {
	t.Helper()
	return waitRecordsFor(t, ns, repo, what, 30*time.Second, cond)
}

// waitRecordsFor is waitRecords with its own deadline.
func waitRecordsFor(t *testing.T, ns string, repo config.Repo, what string, within time.Duration, cond func([]history.Record) bool) []history.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
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

	child := startChild(t, args, io.Discard)
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

// TestSIGKILLMidPrune kills deployd while it prunes 140 of 150 ConfigMaps (slowly:
// --kube-qps 5), starts another, and sees that the inventory still covered every object
// left, that the next deployd prunes the rest, and that what git still holds was never
// deleted: the kept objects keep their UIDs and nothing labelled as the repo's is orphaned.
func TestSIGKILLMidPrune(t *testing.T) {
	const total, keep = 150, 10
	ctx := context.Background()
	srv := gittest.NewServer(t)
	gitRepo := srv.NewRepo(t, "shop/web")
	gitRepo.Commit("main", "150 objects", configMaps(total, "1"))
	appNS, stateNS := env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+appNS+", interval: 1s}\n")
	repo := config.Repo{Name: "shop/web", Environment: "production"}
	args := []string{"--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"), "--namespace", stateNS, "--log-format", "json"}

	_, logs, stop := startDaemon(t, args...)
	waitRecords(t, stateNS, repo, "150 objects deployed", func(r []history.Record) bool {
		return len(r) == 1 && r[0].Phase == history.Succeeded
	})
	if err := stop(); err != nil {
		t.Fatalf("stopping the first deployd: %v\n%s", err, logs)
	}
	kept := map[string]string{} // name → UID
	for i := range keep {
		name := fmt.Sprintf("cm-%03d", i)
		cm, err := env.Client.CoreV1().ConfigMaps(appNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("after the first deployment: %v", err)
		}
		kept[name] = string(cm.UID)
	}

	childLogs := &logtest.Buffer{}
	child := startChild(t, strings.Join(append(args, "--listen", "127.0.0.1:0", "--kube-qps", "5", "--kube-burst", "5"), " "), childLogs)
	removed := map[string]string{}
	for i := keep; i < total; i++ {
		removed[fmt.Sprintf("deploy/manifests/cm-%03d.yaml", i)] = "" // deleted
	}
	head := gitRepo.Commit("main", "keep 10", removed)

	// Kill it once the prune is under way: some removed objects are gone, most are not.
	var left map[string]string
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err := wait.PollUntilContextCancel(pctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		left, _ = labelledConfigMaps(ctx, env.Client, appNS, repo)
		return len(left) > 0 && len(left) <= total-20, nil
	})
	if err != nil {
		t.Fatalf("the prune never got under way (%d objects left):\n%s", len(left), childLogs)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()

	left, err = labelledConfigMaps(ctx, env.Client, appNS, repo)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) <= keep+20 {
		t.Fatalf("the prune was nearly done when killed (%d objects left): make it slower", len(left))
	}
	t.Logf("killed with %d of %d objects left", len(left), total)
	t.Run("the inventory covers every object left", func(t *testing.T) {
		inv := inventoryOf(t, env.Client, stateNS, repo)
		for name := range left {
			if !inv[name] {
				t.Errorf("ConfigMap %s is labelled as the repo's but not in the inventory: nothing would prune it", name)
			}
		}
	})

	_, logs, _ = startDaemon(t, args...)
	recs := waitRecords(t, stateNS, repo, "the interrupted prune redone", func(r []history.Record) bool {
		return len(r) == 3 && r[2].Phase == history.Succeeded
	})
	if recs[1].Phase != history.Error || !strings.HasPrefix(recs[1].Error, "interrupted") || recs[1].Commit.SHA != head || recs[2].Commit.SHA != head {
		t.Errorf("records %+v\n%s", recs, logs)
	}
	t.Run("afterwards only what git holds is left, never deleted", func(t *testing.T) {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err := wait.PollUntilContextCancel(pctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			left, _ = labelledConfigMaps(ctx, env.Client, appNS, repo)
			return len(left) == keep, nil // foreground deletions end a moment after the prune
		})
		if err != nil {
			t.Errorf("%d labelled ConfigMaps left, want the %d in git: %v", len(left), keep, left)
		}
		for name, uid := range kept {
			cm, err := env.Client.CoreV1().ConfigMaps(appNS).Get(ctx, name, metav1.GetOptions{})
			if err != nil || string(cm.UID) != uid {
				t.Errorf("ConfigMap %s, still in git, was deleted (%v) or recreated (uid %s, was %s)", name, err, cm.UID, uid)
			}
		}
		inv := inventoryOf(t, env.Client, stateNS, repo)
		if len(inv) != keep {
			t.Errorf("inventory holds %d objects, want the %d in git", len(inv), keep)
		}
		for name := range kept {
			if !inv[name] {
				t.Errorf("ConfigMap %s is not in the inventory", name)
			}
		}
	})
}
