package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/daemon"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/simcluster"
	"github.com/deployd/deployd/pkg/client"
)

// configMaps renders n ConfigMaps, cm-000 to cm-(n-1), one file each, holding version.
func configMaps(n int, version string) map[string]string {
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("deploy/manifests/cm-%03d.yaml", i)] = fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%03d}\ndata: {version: %q}\n", i, version)
	}
	return files
}

// labelledConfigMaps returns the ConfigMaps in ns that deployd applied for repo: each
// name with the commit it was last applied at.
func labelledConfigMaps(ctx context.Context, kube kubernetes.Interface, ns string, repo config.Repo) (map[string]string, error) {
	sel := apply.LabelManagedBy + "=" + apply.ManagedByValue + "," + apply.LabelRepo + "=" + repo.LabelValue()
	list, err := kube.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, err
	}
	names := map[string]string{}
	for _, cm := range list.Items {
		names[cm.Name] = cm.Annotations[apply.AnnotationCommit]
	}
	return names, nil
}

// outage stops the cluster's API server for 30 seconds, seeing deployd's /readyz fail
// meanwhile and pass again after.
func outage(t *testing.T, cluster *simcluster.Cluster, base string) {
	t.Helper()
	if err := cluster.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	waitStatus(t, base+"/readyz", 503, "[-]cluster failed")
	<-time.After(time.Until(down.Add(30 * time.Second))) // the outage itself, not a wait for a condition
	if err := cluster.StartAPIServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, base+"/readyz", 200, "[+]cluster ok")
}

// TestAPIServerOutage stops the API server for 30 seconds while deployd validates (a
// server-side dry run), then while it applies, 40 objects at 5 requests a second, on a
// cluster of its own so no other test sees the outage. deployd keeps running, says it is
// not ready meanwhile, and once the API server is back retries the deployment to its end:
// every object exists at the commit, the inventory holds them all, and every stored
// record has ended and agrees with what the API serves.
func TestAPIServerOutage(t *testing.T) {
	ctx := context.Background()
	cluster, err := simcluster.Start(ctx, simcluster.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cluster.Stop(); err != nil {
			t.Errorf("stopping the test's own cluster: %v", err)
		}
	})
	kube := kubernetes.NewForConfigOrDie(cluster.Config)
	const objects = 40
	srv := gittest.NewServer(t)
	gitRepo := srv.NewRepo(t, "shop/web")
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: shop, interval: 1s, timeout: 2m}\n")
	repo := config.Repo{Name: "shop/web", Environment: "production"}
	sha := gitRepo.Commit("main", "version 1", configMaps(objects, "1"))
	base, logs, stop := startDaemonWith(t, func(o *daemon.Options) {
		// The retry comes within 4s of the API server's return, not after the up to 32s
		// the default backoff reaches in a 30s outage.
		o.Controller.BackoffMax = 4 * time.Second
	}, "--config", cfg, "--kubeconfig", cluster.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"),
		"--namespace", "deployd", "--kube-qps", "5", "--kube-burst", "5", "--log-format", "json")

	// poll waits for cond, failing with what it last saw.
	poll := func(t *testing.T, what string, within time.Duration, cond func(ctx context.Context) (bool, string)) {
		t.Helper()
		pctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		var last string
		err := wait.PollUntilContextCancel(pctx, 100*time.Millisecond, true, func(ctx context.Context) (done bool, err error) {
			done, last = cond(ctx)
			return done, nil
		})
		if err != nil {
			t.Fatalf("%s: not within %v; last seen: %s\n%s", what, within, last, logs)
		}
	}
	// converged waits for the last record to succeed at sha, then checks every object,
	// the inventory and the records.
	converged := func(t *testing.T, sha, phase string) {
		var recs []history.Record
		poll(t, "deployed after the outage", 2*time.Minute, func(ctx context.Context) (bool, string) {
			recs, _ = storedRecordsOf(ctx, kube, "deployd", repo)
			return len(recs) > 0 && recs[len(recs)-1].Phase == history.Succeeded && recs[len(recs)-1].Commit.SHA == sha, fmt.Sprintf("records %+v", recs)
		})
		names, err := labelledConfigMaps(ctx, kube, "shop", repo)
		if err != nil || len(names) != objects {
			t.Errorf("%d labelled ConfigMaps, want %d (%v)", len(names), objects, err)
		}
		inv := inventoryOf(t, kube, "deployd", repo)
		if len(inv) != objects {
			t.Errorf("inventory holds %d objects, want %d", len(inv), objects)
		}
		for i := range objects {
			name := fmt.Sprintf("cm-%03d", i)
			if names[name] != sha || !inv[name] {
				t.Errorf("ConfigMap %s: applied at %q, in the inventory %v; want at %s", name, names[name], inv[name], sha)
			}
		}
		var cut []history.Record // the deployments of sha the outage cut off
		for i, r := range recs {
			if r.Number != i+1 || !r.Phase.Done() || r.Ended.IsZero() {
				t.Errorf("record %d: number %d, phase %s, ended %v; want numbered from 1 and ended", i, r.Number, r.Phase, r.Ended)
			}
			if r.Commit.SHA == sha && i < len(recs)-1 {
				cut = append(cut, r)
			}
		}
		if len(cut) == 0 {
			t.Fatalf("no deployment of %s was cut off by the outage: records %+v", sha, recs)
		}
		for _, r := range cut {
			if r.Phase != history.Error || !strings.Contains(r.Error, "connection refused") || !strings.Contains(r.Error, phase) {
				t.Errorf("record %d, cut off in the %s: %s with error (%d bytes) %.1000s", r.Number, phase, r.Phase, len(r.Error), r.Error)
			}
		}
		t.Logf("record %d's error (%d bytes): %.400s", cut[0].Number, len(cut[0].Error), cut[0].Error)

		c, err := client.NewClientWithResponses(base)
		if err != nil {
			t.Fatal(err)
		}
		list, err := c.ListHistoryWithResponse(ctx, "shop", "web", &client.ListHistoryParams{})
		if err != nil || list.JSON200 == nil {
			t.Fatalf("%v %s", err, list.Body)
		}
		var served, stored []string
		for _, r := range list.JSON200.Records {
			served = append(served, fmt.Sprintf("%d %s", r.Number, r.Phase))
		}
		for i := len(recs) - 1; i >= 0; i-- { // the API lists newest first
			stored = append(stored, fmt.Sprintf("%d %s", recs[i].Number, recs[i].Phase))
		}
		if strings.Join(served, ", ") != strings.Join(stored, ", ") {
			t.Errorf("the API serves records %v, the state ConfigMap holds %v", served, stored)
		}
	}

	t.Run("during the dry run", func(t *testing.T) {
		// The record is stored as the deployment starts, then the repo's namespace is
		// created; the dry run of 40 objects follows at once and takes 8 seconds.
		poll(t, "the dry run under way", time.Minute, func(ctx context.Context) (bool, string) {
			recs, _ := storedRecordsOf(ctx, kube, "deployd", repo)
			_, err := kube.CoreV1().Namespaces().Get(ctx, "shop", metav1.GetOptions{})
			return len(recs) == 1 && recs[0].Phase == history.Applying && err == nil, fmt.Sprintf("records %+v, namespace: %v", recs, err)
		})
		outage(t, cluster, base)
		converged(t, sha, "dry run")
	})
	t.Run("during the apply", func(t *testing.T) {
		sha := gitRepo.Commit("main", "version 2", configMaps(objects, "2"))
		poll(t, "the apply under way", time.Minute, func(ctx context.Context) (bool, string) {
			names, _ := labelledConfigMaps(ctx, kube, "shop", repo)
			n := 0
			for _, at := range names {
				if at == sha {
					n++
				}
			}
			return n >= objects/5, fmt.Sprintf("%d objects at %s", n, sha)
		})
		outage(t, cluster, base)
		converged(t, sha, "apply")
	})
	if err := stop(); err != nil {
		t.Errorf("deployd stopped with %v after the outages, want a clean stop", err)
	}
	if strings.Contains(logs.String(), "panic") || !strings.Contains(logs.String(), `"msg":"stopped"`) {
		t.Errorf("deployd did not run through the outages to a clean stop:\n%s", logs)
	}
}
