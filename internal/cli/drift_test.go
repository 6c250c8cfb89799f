package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/deployd/deployd/internal/api"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/daemon"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/logtest"
)

// driftManifests are a Deployment of 2 replicas, one that leaves its replicas to an
// autoscaler, a ConfigMap and a Service.
var driftManifests = map[string]string{
	"deploy/manifests/web.yaml": `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "nginx:1.27"}]}
`,
	"deploy/manifests/auto.yaml": `apiVersion: apps/v1
kind: Deployment
metadata: {name: auto}
spec:
  selector: {matchLabels: {app: auto}}
  template:
    metadata: {labels: {app: auto}}
    spec: {containers: [{name: auto, image: "nginx:1.27"}]}
`,
	"deploy/manifests/cm.yaml":  cm("one"),
	"deploy/manifests/svc.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: svc}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n",
}

// driftDaemon deploys driftManifests with the given drift policy and fast back-off,
// and waits for the first deployment to succeed.
func driftDaemon(t *testing.T, policy string, opts func(*daemon.Options), args ...string) (base, appNS, stateNS string, repo config.Repo, logs *logtest.Buffer) {
	t.Helper()
	srv := gittest.NewServer(t)
	srv.NewRepo(t, "shop/web").Commit("main", "one", driftManifests)
	appNS, stateNS = env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+appNS+", interval: 0, drift: "+policy+"}\n")
	base, logs, _ = startDaemonWith(t, func(o *daemon.Options) {
		o.Drift.Settle, o.Drift.Base, o.Drift.Max, o.Drift.Window = 20*time.Millisecond, 250*time.Millisecond, 2*time.Second, time.Minute
		if opts != nil {
			opts(o)
		}
	}, append([]string{"--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"), "--namespace", stateNS, "--log-format", "json"}, args...)...)
	repo = config.Repo{Name: "shop/web", Environment: "production"}
	waitRecords(t, stateNS, repo, "the first deployment succeeds", func(recs []history.Record) bool {
		return len(recs) == 1 && recs[0].Phase == history.Succeeded
	})
	return base, appNS, stateNS, repo, logs
}

// scale sets a Deployment's replicas as manager, as kubectl scale does (an update).
func scale(t *testing.T, ns, name string, replicas int32, manager string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		d, err := env.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		d.Spec.Replicas = &replicas
		_, err = env.Client.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{FieldManager: manager})
		return err == nil, nil // a conflict is tried again
	})
	if err != nil {
		t.Fatalf("scaling %s: %v", name, err)
	}
}

func replicasOf(t *testing.T, ns, name string) int32 {
	t.Helper()
	d, err := env.Client.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return *d.Spec.Replicas
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, what string, cond func(ctx context.Context) bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		return cond(ctx), nil
	})
	if err != nil {
		t.Fatalf("%s: not within 20s", what)
	}
}

// envStatus reads the repo's environment from the status API.
func envStatus(t *testing.T, base string) api.Environment {
	t.Helper()
	resp, err := http.Get(base + "/deployment/shop/web")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var rs api.RepoStatus
	if err := json.Unmarshal(b, &rs); err != nil || len(rs.Environments) != 1 {
		t.Fatalf("status %d %s: %v", resp.StatusCode, b, err)
	}
	return rs.Environments[0]
}

func driftRecords(recs []history.Record) []history.Record {
	var out []history.Record
	for _, r := range recs {
		if r.Trigger == "drift" {
			out = append(out, r)
		}
	}
	return out
}

// TestDriftIsCorrected: a Deployment scaled by hand is scaled back, with a drift record
// naming the manager; a ConfigMap edited by hand is restored; a deleted Service is
// recreated; a manager owning replicas the manifests leave out is not fought.
func TestDriftIsCorrected(t *testing.T) {
	base, appNS, stateNS, repo, logs := driftDaemon(t, "correct", nil)
	if e := envStatus(t, base); !e.InSync {
		t.Fatalf("in sync after the deployment: %+v", e)
	}
	// An autoscaler owns auto's replicas, which the manifests leave out: not drift.
	scale(t, appNS, "auto", 3, "hpa-controller")
	waitFor(t, "the API shows auto's 3 replicas", func(context.Context) bool {
		for _, o := range envStatus(t, base).Objects {
			if o.Name == "auto" && o.Replicas != nil && o.Replicas.Desired == 3 {
				return true
			}
		}
		return false
	})

	scale(t, appNS, "web", 5, "kubectl")
	recs := waitRecords(t, stateNS, repo, "a drift correction succeeds", func(recs []history.Record) bool {
		d := driftRecords(recs)
		return len(d) == 1 && d[0].Phase == history.Succeeded
	})
	d := driftRecords(recs)[0]
	if want := "drift: Deployment/" + appNS + "/web .spec.replicas by kubectl"; d.Note != want {
		t.Errorf("the drift record's note is %q, want %q", d.Note, want)
	}
	if d.Commit.SHA != recs[0].Commit.SHA {
		t.Errorf("the correction deployed %s, not the applied %s", d.Commit.SHA, recs[0].Commit.SHA)
	}
	if got := replicasOf(t, appNS, "web"); got != 2 {
		t.Errorf("web has %d replicas after the correction, want 2", got)
	}

	c, err := env.Client.CoreV1().ConfigMaps(appNS).Get(context.Background(), "settings", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Data["value"] = "hacked"
	if _, err := env.Client.CoreV1().ConfigMaps(appNS).Update(context.Background(), c, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ConfigMap is restored", func(ctx context.Context) bool {
		c, err := env.Client.CoreV1().ConfigMaps(appNS).Get(ctx, "settings", metav1.GetOptions{})
		return err == nil && c.Data["value"] == "one"
	})

	if err := env.Client.CoreV1().Services(appNS).Delete(context.Background(), "svc", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the Service is recreated", func(ctx context.Context) bool {
		_, err := env.Client.CoreV1().Services(appNS).Get(ctx, "svc", metav1.GetOptions{})
		return err == nil
	})
	recs = waitRecords(t, stateNS, repo, "three drift corrections succeed", func(recs []history.Record) bool {
		d := driftRecords(recs)
		return len(d) == 3 && d[2].Phase == history.Succeeded
	})
	notes := ""
	for _, r := range driftRecords(recs) {
		notes += r.Note + "\n"
	}
	for _, want := range []string{"ConfigMap/" + appNS + "/settings .data.value by kubectl-edit", "Service/" + appNS + "/svc deleted"} {
		if !strings.Contains(notes, want) {
			t.Errorf("no drift record says %q:\n%s", want, notes)
		}
	}
	if strings.Contains(notes, "auto") {
		t.Errorf("the autoscaler's replicas were taken as drift:\n%s", notes)
	}
	if got := replicasOf(t, appNS, "auto"); got != 3 {
		t.Errorf("auto has %d replicas after the corrections, want the autoscaler's 3", got)
	}
	waitFor(t, "the API shows the repo in sync", func(context.Context) bool { return envStatus(t, base).InSync })
	if t.Failed() {
		t.Log(logs)
	}
}

// TestDriftReportOnly: with drift: report, drift shows in the API, with the field and
// its manager, and nothing is changed.
func TestDriftReportOnly(t *testing.T) {
	base, appNS, stateNS, repo, _ := driftDaemon(t, "report", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/deployment/shop/web/events", nil)
	stream, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	scale(t, appNS, "web", 5, "kubectl")
	sc := bufio.NewScanner(stream.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "data: ") && strings.Contains(line, `"drift":{"deleted":false,"fields":[{"path":".spec.replicas","manager":"kubectl"}]}`) {
			break
		}
	}
	if sc.Err() != nil || ctx.Err() != nil {
		t.Errorf("no object event tells of web's drift: %v %v", sc.Err(), ctx.Err())
	}
	if err := env.Client.CoreV1().Services(appNS).Delete(context.Background(), "svc", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var e api.Environment
	waitFor(t, "the API shows the drift", func(context.Context) bool {
		e = envStatus(t, base)
		n := 0
		for _, o := range e.Objects {
			if o.Drift != nil {
				n++
			}
		}
		return !e.InSync && n == 2
	})
	for _, o := range e.Objects {
		switch {
		case o.Name == "web" && (o.Drift == nil || len(o.Drift.Fields) != 1 || o.Drift.Fields[0] != api.DriftField{Path: ".spec.replicas", Manager: "kubectl"}):
			t.Errorf("web's drift %+v", o.Drift)
		case o.Name == "svc" && (o.Drift == nil || !o.Drift.Deleted):
			t.Errorf("svc's drift %+v", o.Drift)
		case o.Name != "web" && o.Name != "svc" && o.Drift != nil:
			t.Errorf("%s drifted: %+v", o.Name, o.Drift)
		}
	}
	code, out, _ := runCLI(t, "status", "shop/web", "--server", base)
	for _, want := range []string{"OUT OF SYNC: the cluster drifted from the applied manifests\n", "drifted: .spec.replicas by kubectl\n", "drifted: deleted\n"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("deployd status exits %d without %q:\n%s", code, want, out)
		}
	}
	if got := replicasOf(t, appNS, "web"); got != 5 {
		t.Errorf("web has %d replicas, want the hand-set 5 left alone", got)
	}
	if _, err := env.Client.CoreV1().Services(appNS).Get(context.Background(), "svc", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the deleted Service is back (%v): report must not correct", err)
	}
	if recs := records(t, stateNS, repo); len(recs) != 1 {
		t.Errorf("%d records, want only the first deployment: %+v", len(recs), recs)
	}
}

// TestDriftFight: another writer that keeps setting the replicas back is corrected with
// a back-off, shown as "fighting with" it, with a bounded number of applies.
func TestDriftFight(t *testing.T) {
	base, appNS, stateNS, repo, _ := driftDaemon(t, "correct", nil)
	ctx, stop := context.WithCancel(context.Background())
	fought := make(chan struct{})
	go func() { // the other writer: sets 5 replicas whenever they are not 5
		defer close(fought)
		for ctx.Err() == nil {
			d, err := env.Client.AppsV1().Deployments(appNS).Get(ctx, "web", metav1.GetOptions{})
			if err == nil && *d.Spec.Replicas != 5 {
				five := int32(5)
				d.Spec.Replicas = &five
				_, _ = env.Client.AppsV1().Deployments(appNS).Update(ctx, d, metav1.UpdateOptions{FieldManager: "fighter"})
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond): // the fighter's own pace
			}
		}
	}()
	window := 6 * time.Second
	start := time.Now()
	waitFor(t, "the API says deployd fights", func(context.Context) bool {
		return envStatus(t, base).DriftReason == "fighting with fighter"
	})
	<-time.After(window - time.Since(start)) // the test's window: how many applies fit in it is the point
	stop()
	<-fought
	// Back-off from 250ms doubling to 2s: at most 1 + 0.5 + 1 + 2 + 2 ... s ≈ 5 corrections in 6s;
	// without it a correction would follow each of the fighter's writes (hundreds).
	n := len(driftRecords(records(t, stateNS, repo)))
	t.Logf("%d drift corrections in %v", n, window)
	if n < 2 || n > 7 {
		t.Errorf("%d drift corrections in %v, want 2..7", n, window)
	}
	waitFor(t, "the fighter gone, web is corrected", func(context.Context) bool { return replicasOf(t, appNS, "web") == 2 })
	waitFor(t, "the API shows the repo in sync", func(context.Context) bool { return envStatus(t, base).InSync })
}

// TestDriftPausedAndIgnored: an object annotated deployd.dev/drift: ignore is not
// drift; a paused repo shows its drift and the reason, and corrects it once resumed.
func TestDriftPausedAndIgnored(t *testing.T) {
	token := writeFile(t, t.TempDir(), "token", "s3cret\n")
	base, appNS, stateNS, repo, _ := driftDaemon(t, "correct", nil, "--api-token-file", token)
	c, err := env.Client.CoreV1().ConfigMaps(appNS).Get(context.Background(), "settings", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Annotations["deployd.dev/drift"] = "ignore"
	c.Data["value"] = "by hand"
	if _, err := env.Client.CoreV1().ConfigMaps(appNS).Update(context.Background(), c, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runCLI(t, "pause", "shop/web", "--server", base, "--token-file", token, "--reason", "incident"); code != 0 {
		t.Fatalf("pause exits %d: %s %s", code, out, errOut)
	}
	scale(t, appNS, "web", 5, "kubectl")
	var e api.Environment
	waitFor(t, "the API shows the paused repo's drift", func(context.Context) bool {
		e = envStatus(t, base)
		return !e.InSync && e.DriftReason == "paused: drift is not corrected"
	})
	for _, o := range e.Objects {
		if (o.Drift != nil) != (o.Name == "web") {
			t.Errorf("%s's drift: %+v", o.Name, o.Drift)
		}
	}
	if got := replicasOf(t, appNS, "web"); got != 5 {
		t.Errorf("paused, web has %d replicas: it was corrected", got)
	}
	if n := len(driftRecords(records(t, stateNS, repo))); n != 0 {
		t.Errorf("%d drift records while paused", n)
	}
	if code, out, errOut := runCLI(t, "resume", "shop/web", "--server", base, "--token-file", token); code != 0 {
		t.Fatalf("resume exits %d: %s %s", code, out, errOut)
	}
	waitRecords(t, stateNS, repo, "resumed, the drift is corrected", func(recs []history.Record) bool {
		d := driftRecords(recs)
		return len(d) == 1 && d[0].Phase == history.Succeeded
	})
	if got := replicasOf(t, appNS, "web"); got != 2 {
		t.Errorf("resumed, web has %d replicas, want 2", got)
	}
}

// TestDriftWhileDown: drift made while deployd was stopped, which no watch saw, is found
// by the dry-run check after the next start and corrected.
func TestDriftWhileDown(t *testing.T) {
	srv := gittest.NewServer(t)
	srv.NewRepo(t, "shop/web").Commit("main", "one", driftManifests)
	appNS, stateNS := env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+appNS+", interval: 0, driftInterval: 1h}\n")
	args := []string{"--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"), "--namespace", stateNS, "--log-format", "json"}
	hook := func(o *daemon.Options) {
		o.Drift.Settle, o.Drift.FirstCheck = 20*time.Millisecond, 300*time.Millisecond
	}
	_, _, stop := startDaemonWith(t, hook, args...)
	repo := config.Repo{Name: "shop/web", Environment: "production"}
	waitRecords(t, stateNS, repo, "the first deployment succeeds", func(recs []history.Record) bool {
		return len(recs) == 1 && recs[0].Phase == history.Succeeded
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	scale(t, appNS, "web", 5, "kubectl")
	c, err := env.Client.CoreV1().ConfigMaps(appNS).Get(context.Background(), "settings", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Data["value"] = "by hand"
	if _, err := env.Client.CoreV1().ConfigMaps(appNS).Update(context.Background(), c, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}

	_, logs, _ := startDaemonWith(t, hook, args...)
	recs := waitRecords(t, stateNS, repo, "the drift found after the start is corrected", func(recs []history.Record) bool {
		d := driftRecords(recs)
		return len(d) == 1 && d[0].Phase == history.Succeeded
	})
	want := "drift: ConfigMap/" + appNS + "/settings .data.value by another writer; Deployment/" + appNS + "/web .spec.replicas by another writer"
	if got := driftRecords(recs)[0].Note; got != want {
		t.Errorf("the drift record's note is %q, want %q", got, want)
	}
	if got := replicasOf(t, appNS, "web"); got != 2 {
		t.Errorf("web has %d replicas, want 2", got)
	}
	if c, err := env.Client.CoreV1().ConfigMaps(appNS).Get(context.Background(), "settings", metav1.GetOptions{}); err != nil || c.Data["value"] != "one" {
		t.Errorf("the ConfigMap is %v (%v), want its value one", c.Data, err)
	}
	if t.Failed() {
		t.Log(logs)
	}
}

// TestDriftTwoReplicas: under drift: report, a hand edit seen by the leader is shown by
// the follower (through the state ConfigMap), and its end too, once a forced sync
// through the follower puts the field back.
func TestDriftTwoReplicas(t *testing.T) {
	srv := gittest.NewServer(t)
	srv.NewRepo(t, "shop/web").Commit("main", "one", driftManifests)
	appNS, stateNS := env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+appNS+", interval: 0, drift: report}\n")
	token := writeFile(t, dir, "token", "api-token\n")
	args := func(name string) string {
		return "--config " + cfg + " --kubeconfig " + env.Kubeconfig + " --cache-dir " + filepath.Join(dir, name) + " --namespace " + stateNS +
			" --api-token-file " + token + " --log-format json --leader-elect"
	}
	a := startReplica(t, args("a"))
	waitHolder(t, stateNS, a.id, 20*time.Second)
	b := startReplica(t, args("b"))
	repo := config.Repo{Name: "shop/web", Environment: "production"}
	waitRecords(t, stateNS, repo, "the first deployment by the leader", func(recs []history.Record) bool {
		return len(recs) == 1 && recs[0].Phase == history.Succeeded
	})
	if e := envStatus(t, b.base); !e.InSync {
		t.Errorf("the follower shows drift before any edit: %+v", e)
	}

	scale(t, appNS, "web", 5, "kubectl")
	var e api.Environment
	waitFor(t, "the follower shows web's drift", func(context.Context) bool {
		e = envStatus(t, b.base)
		return !e.InSync
	})
	stored := func() string {
		t.Helper()
		c, err := env.Client.CoreV1().ConfigMaps(stateNS).Get(context.Background(), repo.StateName(), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Data["drift"]
	}
	if got := stored(); !strings.Contains(got, `{"path":".spec.replicas","manager":"kubectl"}`) {
		t.Errorf("the state ConfigMap's drift: %q", got)
	}
	for _, o := range e.Objects {
		switch {
		case o.Name == "web" && (o.Drift == nil || len(o.Drift.Fields) != 1 || o.Drift.Fields[0] != api.DriftField{Path: ".spec.replicas", Manager: "kubectl"}):
			t.Errorf("web's drift on the follower %+v", o.Drift)
		case o.Name != "web" && o.Drift != nil:
			t.Errorf("%s drifted on the follower: %+v", o.Name, o.Drift)
		}
	}

	req, _ := http.NewRequest(http.MethodPost, b.base+"/deployment/shop/web/sync?force=true", nil)
	req.Header.Set("Authorization", "Bearer api-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("forced sync through the follower: %s", resp.Status)
	}
	waitFor(t, "the follower shows the repo in sync again", func(context.Context) bool {
		e = envStatus(t, b.base)
		return e.InSync
	})
	if got := replicasOf(t, appNS, "web"); got != 2 {
		t.Errorf("web has %d replicas after the forced sync, want 2", got)
	}
	if got := stored(); got != "" {
		t.Errorf("the state ConfigMap keeps drift once in sync: %q", got)
	}
	for _, o := range e.Objects {
		if o.Drift != nil {
			t.Errorf("%s still drifted on the follower: %+v", o.Name, o.Drift)
		}
	}
}
