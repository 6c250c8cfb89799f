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

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/pkg/client"
)

const apiManifests = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "nginx:1.27"}]}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2}
`

func bearer(token string) client.RequestEditorFn {
	return func(ctx context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+token)
		return nil
	}
}

// TestAPIThroughTheGeneratedClient exercises every endpoint with the client generated
// from the committed spec, against a running deployd on the local cluster.
func TestAPIThroughTheGeneratedClient(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	sha := repo.Commit("main", "first release", map[string]string{"deploy/manifests/app.yaml": apiManifests})
	appNS, stateNS := env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+appNS+", interval: 0, environment: dev}\n")
	token := writeFile(t, dir, "token", "api-token\n")
	base, logs, stop := startDaemon(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"),
		"--namespace", stateNS, "--api-token-file", token)
	c, err := client.NewClientWithResponses(base)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	var status *client.RepoStatus
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := c.GetDeploymentWithResponse(ctx, "shop", "web", &client.GetDeploymentParams{})
		if err != nil {
			t.Fatal(err)
		}
		if res.JSON200 != nil && len(res.JSON200.Environments) == 1 && res.JSON200.Environments[0].Phase == "succeeded" {
			status = res.JSON200
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never succeeded: %s\n%s", res.Body, logs)
		}
		time.Sleep(100 * time.Millisecond) // polling the endpoint under test, with a deadline
	}
	t.Run("status shows the commit and ready replicas", func(t *testing.T) {
		e := status.Environments[0]
		if e.DeployedCommit == nil || *e.DeployedCommit != sha || e.ObservedCommit == nil || e.ObservedCommit.Sha != sha || e.Rollout != "Current" || e.Namespace != appNS {
			t.Errorf("environment %+v", e)
		}
		var sawDeployment bool
		for _, o := range e.Objects {
			if o.Kind == "Deployment" {
				sawDeployment = true
				if o.Replicas == nil || o.Replicas.Available != 3 || o.Replicas.Desired != 3 || o.Images == nil || (*o.Images)[0] != "nginx:1.27" || o.Status != "Current" {
					t.Errorf("deployment object %+v", o)
				}
			}
		}
		if !sawDeployment || len(e.Objects) != 2 {
			t.Errorf("objects %+v", e.Objects)
		}
	})
	t.Run("an unknown repo is a 404 with a message", func(t *testing.T) {
		res, err := c.GetDeploymentWithResponse(ctx, "shop", "nope", &client.GetDeploymentParams{})
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode() != 404 || res.ApplicationproblemJSON404 == nil || !strings.Contains(*res.ApplicationproblemJSON404.Detail, "repo shop/nope is not in deployd's config") {
			t.Errorf("%d %s", res.StatusCode(), res.Body)
		}
	})
	t.Run("history lists and gets records", func(t *testing.T) {
		list, err := c.ListHistoryWithResponse(ctx, "shop", "web", &client.ListHistoryParams{})
		if err != nil || list.JSON200 == nil || list.JSON200.Total != 1 || list.JSON200.Records[0].Name != "deployment-0001" {
			t.Fatalf("%v %s", err, list.Body)
		}
		rec, err := c.GetHistoryRecordWithResponse(ctx, "shop", "web", 1, &client.GetHistoryRecordParams{})
		if err != nil || rec.JSON200 == nil || rec.JSON200.Commit.Sha != sha || rec.JSON200.Trigger != "startup" {
			t.Fatalf("%v %s", err, rec.Body)
		}
		missing, _ := c.GetHistoryRecordWithResponse(ctx, "shop", "web", 99, &client.GetHistoryRecordParams{})
		if missing.StatusCode() != 404 {
			t.Errorf("record 99: %d", missing.StatusCode())
		}
	})
	t.Run("a live Secret never shows its values", func(t *testing.T) {
		res, err := c.GetObjectWithResponse(ctx, "shop", "web", "secret", "creds", &client.GetObjectParams{})
		if err != nil || res.StatusCode() != 200 {
			t.Fatalf("%v %s", err, res.Body)
		}
		body := string(res.Body)
		if strings.Contains(body, "hunter2") || strings.Contains(body, "aHVudGVyMg") || !strings.Contains(body, `"password":"\u003credacted\u003e"`) && !strings.Contains(body, `"password":"<redacted>"`) || strings.Contains(body, "managedFields") {
			t.Errorf("secret body %s", body)
		}
		other, _ := c.GetObjectWithResponse(ctx, "shop", "web", "Secret", "kube-root-ca", &client.GetObjectParams{})
		if other.StatusCode() != 404 {
			t.Errorf("an object deployd did not apply: %d", other.StatusCode())
		}
	})
	t.Run("the list filters by phase", func(t *testing.T) {
		ok := "succeeded"
		res, _ := c.ListDeploymentsWithResponse(ctx, &client.ListDeploymentsParams{Phase: (*client.ListDeploymentsParamsPhase)(&ok)})
		if res.JSON200 == nil || len(res.JSON200.Deployments) != 1 || res.JSON200.Deployments[0].Repo != "shop/web" {
			t.Errorf("%s", res.Body)
		}
		failed := "failed"
		res, _ = c.ListDeploymentsWithResponse(ctx, &client.ListDeploymentsParams{Phase: (*client.ListDeploymentsParamsPhase)(&failed)})
		if res.JSON200 == nil || len(res.JSON200.Deployments) != 0 {
			t.Errorf("%s", res.Body)
		}
	})
	t.Run("sync needs the token and queues a deployment", func(t *testing.T) {
		res, _ := c.SyncWithResponse(ctx, "shop", "web", &client.SyncParams{})
		if res.StatusCode() != 401 {
			t.Errorf("without token: %d", res.StatusCode())
		}
		res, _ = c.SyncWithResponse(ctx, "shop", "web", &client.SyncParams{}, bearer("wrong"))
		if res.StatusCode() != 401 {
			t.Errorf("wrong token: %d", res.StatusCode())
		}
		force := true
		res, err := c.SyncWithResponse(ctx, "shop", "web", &client.SyncParams{Force: &force}, bearer("api-token"))
		if err != nil || res.StatusCode() != 202 || res.JSON202 == nil || res.JSON202.Number != 2 {
			t.Fatalf("%v %d %s", err, res.StatusCode(), res.Body)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			rec, _ := c.GetHistoryRecordWithResponse(ctx, "shop", "web", 2, &client.GetHistoryRecordParams{})
			if rec.JSON200 != nil && rec.JSON200.Trigger == "api" && rec.JSON200.Phase == "succeeded" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("record 2: %s", rec.Body)
			}
			time.Sleep(100 * time.Millisecond) // polling the endpoint under test, with a deadline
		}
	})
	t.Run("a paused repo refuses sync until resumed", func(t *testing.T) {
		reason := "incident 42"
		res, err := c.PauseWithResponse(ctx, "shop", "web", &client.PauseParams{Reason: &reason}, bearer("api-token"))
		if err != nil || res.StatusCode() != 200 || !res.JSON200.Paused {
			t.Fatalf("%v %s", err, res.Body)
		}
		st, _ := c.GetDeploymentWithResponse(ctx, "shop", "web", &client.GetDeploymentParams{})
		if e := st.JSON200.Environments[0]; !e.Paused || e.PauseReason == nil || *e.PauseReason != reason {
			t.Errorf("status %+v", e)
		}
		sync, _ := c.SyncWithResponse(ctx, "shop", "web", &client.SyncParams{}, bearer("api-token"))
		if sync.StatusCode() != 409 {
			t.Errorf("sync while paused: %d %s", sync.StatusCode(), sync.Body)
		}
		if res, _ := c.ResumeWithResponse(ctx, "shop", "web", &client.ResumeParams{}, bearer("api-token")); res.StatusCode() != 200 || res.JSON200.Paused {
			t.Errorf("resume: %s", res.Body)
		}
		if sync, _ := c.SyncWithResponse(ctx, "shop", "web", &client.SyncParams{}, bearer("api-token")); sync.StatusCode() != 202 {
			t.Errorf("sync after resume: %d", sync.StatusCode())
		}
	})
	t.Run("config shows the repos without credentials", func(t *testing.T) {
		res, err := c.GetConfigWithResponse(ctx, &client.GetConfigParams{})
		if err != nil || res.JSON200 == nil || len(res.JSON200.Repos) != 1 || res.JSON200.Repos[0].Interval != "0s" || res.JSON200.Repos[0].Auth != "none" {
			t.Errorf("%v %s", err, res.Body)
		}
	})
	t.Run("rollback deploys an earlier commit and pauses the repo", func(t *testing.T) {
		v2 := repo.Commit("main", "v2", map[string]string{"deploy/manifests/app.yaml": strings.Replace(apiManifests, "nginx:1.27", "nginx:1.28", 1)})
		sync, _ := c.SyncWithResponse(ctx, "shop", "web", &client.SyncParams{}, bearer("api-token"))
		n := sync.JSON202.Number
		waitRecord(t, c, n, func(r *client.Record) bool { return r.Phase == "succeeded" && r.Commit.Sha == v2 })
		res, err := c.RollbackWithResponse(ctx, "shop", "web", &client.RollbackParams{To: 1}, bearer("api-token"))
		if err != nil || res.StatusCode() != 202 || res.JSON202.Commit != sha || !res.JSON202.Paused {
			t.Fatalf("%v %d %s", err, res.StatusCode(), res.Body)
		}
		waitRecord(t, c, n+1, func(r *client.Record) bool {
			return r.Phase == "succeeded" && r.Commit.Sha == sha && r.Trigger == "rollback"
		})
		d, err := env.Client.AppsV1().Deployments(appNS).Get(ctx, "web", metav1.GetOptions{})
		if err != nil || d.Spec.Template.Spec.Containers[0].Image != "nginx:1.27" {
			t.Errorf("image after rollback: %v %v", d.Spec.Template.Spec.Containers[0].Image, err)
		}
		st, _ := c.GetDeploymentWithResponse(ctx, "shop", "web", &client.GetDeploymentParams{})
		if e := st.JSON200.Environments[0]; !e.Paused || e.PauseReason == nil || !strings.HasPrefix(*e.PauseReason, "rolled back to deployment-0001") {
			t.Errorf("status after rollback %+v", e)
		}
		bad, _ := c.RollbackWithResponse(ctx, "shop", "web", &client.RollbackParams{To: 99}, bearer("api-token"))
		if bad.StatusCode() != 404 {
			t.Errorf("rollback to 99: %d", bad.StatusCode())
		}
		if res, _ := c.ResumeWithResponse(ctx, "shop", "web", &client.ResumeParams{}, bearer("api-token")); res.StatusCode() != 200 {
			t.Errorf("resume: %s", res.Body)
		}
	})
	t.Run("metrics count deployments and requests by route", func(t *testing.T) {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{
			`deployd_deployments_total{result="succeeded"}`,
			`deployd_http_request_duration_seconds_count{code="200",method="GET",route="GET /deployment/{owner}/{repo}"}`,
			`deployd_git_check_duration_seconds_count{result="ok"}`,
			`deployd_queue_depth`,
		} {
			if !strings.Contains(string(b), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		if strings.Contains(string(b), "shop/web") || strings.Contains(string(b), "/deployment/shop") {
			t.Error("/metrics has a raw repo name or path in a label")
		}
	})
	t.Run("events deliver a deployment's phases in order", func(t *testing.T) {
		sctx, cancel := context.WithCancel(ctx)
		req, _ := http.NewRequestWithContext(sctx, http.MethodGet, base+"/deployment/shop/web/events", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		force := true
		sync, _ := c.SyncWithResponse(ctx, "shop", "web", &client.SyncParams{Force: &force}, bearer("api-token"))
		want := sync.JSON202.Number
		var phases []string
		sc := bufio.NewScanner(resp.Body)
		event := ""
		for !(len(phases) > 0 && phases[len(phases)-1] == "succeeded") && sc.Scan() {
			line := sc.Text()
			if e, ok := strings.CutPrefix(line, "event: "); ok {
				event = e
			}
			if d, ok := strings.CutPrefix(line, "data: "); ok && event == "deployment" {
				var ev client.DeploymentEvent
				if err := json.Unmarshal([]byte(d), &ev); err != nil {
					t.Fatal(err)
				}
				if ev.Record.Number == want {
					phases = append(phases, string(ev.Record.Phase))
				}
			}
		}
		if strings.Join(phases, ",") != "queued,applying,waiting,succeeded" {
			t.Errorf("phases %v", phases)
		}
		cancel()
		resp.Body.Close()
		unknown, _ := http.Get(base + "/deployment/shop/nope/events")
		if unknown.StatusCode != 404 {
			t.Errorf("events of an unknown repo: %d", unknown.StatusCode)
		}
		unknown.Body.Close()
		// The stream's handler ended with its client: shutdown has nothing to cut off.
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(logs.String(), "cut off") {
			t.Errorf("shutdown cut off a request:\n%s", logs)
		}
	})
}

func waitRecord(t *testing.T, c *client.ClientWithResponses, n int64, ok func(*client.Record) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec, _ := c.GetHistoryRecordWithResponse(context.Background(), "shop", "web", n, &client.GetHistoryRecordParams{})
		if rec != nil && rec.JSON200 != nil && ok(rec.JSON200) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("record %d: %s", n, rec.Body)
		}
		time.Sleep(100 * time.Millisecond) // polling the endpoint under test, with a deadline
	}
}
