package cli

import (
	"context"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/simcluster"
)

// pushHook sends a signed push of main for fullName and expects it queued.
func pushHook(t *testing.T, base, secret, fullName string) {
	t.Helper()
	body := `{"ref":"refs/heads/main","repository":{"full_name":"` + fullName + `"}}`
	if code := signedDelivery(t, base, secret, "push", body); code != http.StatusAccepted {
		t.Fatalf("webhook answered %d", code)
	}
}

func cm(value string) string {
	return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {value: \"" + value + "\"}\n"
}

// TestPushIsApplied runs the real daemon against the cluster: the startup check applies
// the manifests, a signed push applies a change, a broken manifest applies nothing and
// leaves the previous version, and the fix is applied.
func TestPushIsApplied(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	repo.Commit("main", "one", map[string]string{"deploy/manifests/cm.yaml": cm("one"), "README.md": "x"})
	appNS, stateNS := env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+appNS+", interval: 0}\n")
	secret := writeFile(t, dir, "secret", "hook-secret\n")
	base, logs, _ := startDaemon(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"),
		"--webhook-secret-file", secret, "--namespace", stateNS, "--log-format", "json")

	waitValue := func(want string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		var got string
		err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			c, err := env.Client.CoreV1().ConfigMaps(appNS).Get(ctx, "settings", metav1.GetOptions{})
			if err == nil {
				got = c.Data["value"]
			}
			return got == want, nil
		})
		if err != nil {
			t.Fatalf("ConfigMap value %q, want %q:\n%s", got, want, logs)
		}
	}
	waitValue("one")

	repo.Commit("main", "two", map[string]string{"deploy/manifests/cm.yaml": cm("two")})
	pushHook(t, base, "hook-secret", "shop/web")
	waitValue("two")

	repo.Commit("main", "broken", map[string]string{"deploy/manifests/cm.yaml": cm("three"), "deploy/manifests/bad.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other, namespace: kube-system}\n"})
	pushHook(t, base, "hook-secret", "shop/web")
	waitLog(t, logs, func(rec map[string]any) bool {
		e, _ := rec["err"].(string)
		return rec["msg"] == "deploy failed; not retried until a new commit or a forced sync" && strings.Contains(e, `deploy/manifests/bad.yaml:1: ConfigMap/kube-system/other: namespace "kube-system" is not the repo's namespace`)
	})
	c, _ := env.Client.CoreV1().ConfigMaps(appNS).Get(context.Background(), "settings", metav1.GetOptions{})
	if c.Data["value"] != "two" {
		t.Errorf("after the broken commit the value is %q: something was applied", c.Data["value"])
	}

	repo.Commit("main", "fixed", map[string]string{"deploy/manifests/bad.yaml": ""})
	pushHook(t, base, "hook-secret", "shop/web")
	waitValue("three")
	inv, err := env.Client.CoreV1().ConfigMaps(stateNS).List(context.Background(), metav1.ListOptions{LabelSelector: "deployd.dev/repo=shop.web"})
	if err != nil || len(inv.Items) != 1 || !strings.Contains(inv.Items[0].Data["inventory"], `"name":"settings"`) {
		t.Errorf("inventory in %s: %+v, %v", stateNS, inv, err)
	}
}

// stuckDeployment is a Deployment whose pods crash-loop, so its rollout never finishes
// (or fails after deadline seconds).
func stuckDeployment(deadline int) string {
	return "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  progressDeadlineSeconds: " + strconv.Itoa(deadline) +
		"\n  selector: {matchLabels: {app: web}}\n" +
		"  template:\n    metadata: {labels: {app: web, " + simcluster.CrashLoopLabel + ": \"true\"}}\n    spec: {containers: [{name: web, image: \"nginx:1.27\"}]}\n"
}
