package cli

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
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
	"github.com/deployd/deployd/internal/logtest"
	"github.com/deployd/deployd/internal/simcluster"
	"github.com/deployd/deployd/pkg/client"
)

// replica is a deployd process started with --leader-elect.
type replica struct {
	cmd  *exec.Cmd
	base string
	logs *logtest.Buffer
	id   string // its identity in the Lease, from its log
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startReplica runs deployd as a child process (so it can be SIGKILLed) and waits until
// it serves and has said its identity.
func startReplica(t *testing.T, args string) *replica {
	t.Helper()
	addr := freeAddr(t)
	r := &replica{base: "http://" + addr, logs: &logtest.Buffer{}}
	r.cmd = startChild(t, args+" --listen "+addr, r.logs)
	waitLog(t, r.logs, func(rec map[string]any) bool {
		id, _ := rec["identity"].(string)
		if rec["msg"] == "leader election on" && id != "" {
			r.id = id
			return true
		}
		return false
	})
	waitStatus(t, r.base+"/healthz", http.StatusOK, "ok")
	return r
}

// holder is the Lease's holder, or "" when there is none.
func holder(ns string) string {
	l, err := env.Client.CoordinationV1().Leases(ns).Get(context.Background(), "deployd", metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func waitHolder(t *testing.T, ns, id string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return holder(ns) == id, nil
	}); err != nil {
		t.Fatalf("the lease is held by %q after %s, want %q", holder(ns), within, id)
	}
	return time.Since(start)
}

// TestTwoReplicas runs two deployd processes with leader election: only the leader
// deploys; a push delivered to the follower is handed to the leader through the state
// ConfigMap and deployed; the follower serves the history the leader wrote; killing the
// leader mid-rollout makes the follower the leader within the lease duration, and it
// redoes the interrupted deployment.
func TestTwoReplicas(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	repo.Commit("main", "one", map[string]string{"deploy/manifests/cm.yaml": cm("one")})
	appNS, stateNS := env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+appNS+", interval: 0, timeout: 2m}\n")
	secret := writeFile(t, dir, "secret", "hook-secret\n")
	token := writeFile(t, dir, "token", "api-token\n")
	key := config.Repo{Name: "shop/web", Environment: "production"}
	args := func(name string) string {
		return "--config " + cfg + " --kubeconfig " + env.Kubeconfig + " --cache-dir " + filepath.Join(dir, name) + " --namespace " + stateNS +
			" --webhook-secret-file " + secret + " --api-token-file " + token + " --log-format json --leader-elect"
	}

	a := startReplica(t, args("a"))
	waitHolder(t, stateNS, a.id, 20*time.Second)
	b := startReplica(t, args("b"))
	waitRecords(t, stateNS, key, "first deployment by the leader", func(r []history.Record) bool {
		return len(r) == 1 && r[0].Phase == history.Succeeded
	})
	// records lists the history oldest first.

	// A push delivered to the follower: the repo is not polled (interval 0), so only the
	// hand-over can bring it to the leader. Its first commit is overtaken by the second.
	overtaken := repo.Commit("main", "two, overtaken", map[string]string{"deploy/manifests/cm.yaml": cm("overtaken")})
	repo.Commit("main", "two", map[string]string{"deploy/manifests/cm.yaml": cm("two")})
	pushHook(t, b.base, "hook-secret", "shop/web")
	recs := waitRecords(t, stateNS, key, "push handed over and deployed", func(r []history.Record) bool {
		return len(r) == 2 && r[1].Phase == history.Succeeded
	})
	if recs[1].Trigger != "webhook" || recs[1].Commit.SHA != repo.Head() {
		t.Errorf("the handed-over push's record: %+v", recs[1])
	}
	c, err := env.Client.CoreV1().ConfigMaps(appNS).Get(context.Background(), "settings", metav1.GetOptions{})
	if err != nil || c.Data["value"] != "two" {
		t.Fatalf("settings after the handed-over push: %v %v", c, err)
	}
	// The follower serves what the leader wrote.
	body := waitStatus(t, b.base+"/deployment/shop/web", http.StatusOK, repo.Head())
	var got struct {
		Environments []struct {
			DeployedCommit string `json:"deployedCommit"`
			Phase          string `json:"phase"`
			Rollout        string `json:"rollout"`
			Current        *struct{ Number int }
		} `json:"environments"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil || len(got.Environments) != 1 || got.Environments[0].Current == nil ||
		got.Environments[0].Current.Number != 2 || got.Environments[0].DeployedCommit != repo.Head() || got.Environments[0].Phase != "succeeded" {
		t.Errorf("the follower's status: %s (%v)", body, err)
	}
	// The follower knows from the records the leader wrote which deployment carries the
	// overtaken commit.
	if code, out, errOut := runCLI(t, "wait", "shop/web", "--commit", overtaken, "--server", b.base, "--timeout", "20s"); code != 0 ||
		!strings.Contains(out, overtaken[:12]+" is in "+repo.Head()[:12]+", deployed as deployment-0002") {
		t.Errorf("wait on the overtaken commit through the follower: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, l := range strings.Split(b.logs.String(), "\n") {
		if strings.Contains(l, "this replica is the leader") || strings.Contains(l, `"msg":"deployment"`) || strings.Contains(l, `"msg":"repo checked"`) {
			t.Errorf("the follower acted as the leader: %s", l)
		}
	}

	// Pause and resume through the follower: the leader follows.
	ctx := context.Background()
	ca, err := client.NewClientWithResponses(a.base)
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := client.NewClientWithResponses(b.base)
	reason := "incident 7"
	if res, err := cb.PauseWithResponse(ctx, "shop", "web", &client.PauseParams{Reason: &reason}, bearer("api-token")); err != nil || res.StatusCode() != http.StatusOK {
		t.Fatalf("pause through the follower: %v %v", err, res)
	}
	leaderPaused := func(want bool) {
		t.Helper()
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var last string
		if err := wait.PollUntilContextCancel(pctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			res, err := ca.GetDeploymentWithResponse(ctx, "shop", "web", &client.GetDeploymentParams{})
			if err != nil || res.JSON200 == nil || len(res.JSON200.Environments) != 1 {
				return false, nil
			}
			last = string(res.Body)
			return res.JSON200.Environments[0].Paused == want, nil
		}); err != nil {
			t.Fatalf("the leader's status does not show paused=%v: %s", want, last)
		}
	}
	leaderPaused(true)
	if res, _ := ca.SyncWithResponse(ctx, "shop", "web", &client.SyncParams{}, bearer("api-token")); res == nil || res.StatusCode() != http.StatusConflict {
		t.Errorf("a sync at the leader while paused through the follower: %v", res)
	}
	if res, err := cb.ResumeWithResponse(ctx, "shop", "web", &client.ResumeParams{}, bearer("api-token")); err != nil || res.StatusCode() != http.StatusOK {
		t.Fatalf("resume through the follower: %v %v", err, res)
	}
	leaderPaused(false)

	// A slow rollout, killed mid-wait: the follower takes over and redoes it.
	repo.Commit("main", "three", map[string]string{"deploy/manifests/web.yaml": slowDeployment("30s")})
	pushHook(t, b.base, "hook-secret", "shop/web")
	waitRecords(t, stateNS, key, "third deployment waiting", func(r []history.Record) bool {
		if len(r) != 3 || r[2].Phase != history.Applying {
			return false
		}
		cm, err := env.Client.CoreV1().ConfigMaps(stateNS).Get(context.Background(), key.StateName(), metav1.GetOptions{})
		return err == nil && strings.Contains(cm.Data["inventory"], `"kind":"Deployment"`)
	})
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took := waitHolder(t, stateNS, b.id, 25*time.Second)
	t.Logf("the follower took over %s after the leader was killed", took.Round(100*time.Millisecond))
	if took > 15*time.Second+2*2*time.Second {
		t.Errorf("take-over took %s, more than the 15 s lease and two retries", took)
	}
	recs = waitRecordsFor(t, stateNS, key, "interrupted deployment redone", time.Minute, func(r []history.Record) bool {
		return len(r) == 4 && r[3].Phase == history.Succeeded
	})
	if recs[2].Phase != history.Error || !strings.HasPrefix(recs[2].Error, "interrupted") || recs[3].Trigger != "startup" || recs[3].Commit.SHA != repo.Head() {
		t.Errorf("records after the take-over: %+v\n%s", recs[2:], b.logs)
	}
}

// slowDeployment is a Deployment whose pod becomes ready after the given duration.
func slowDeployment(after string) string {
	return "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n" +
		"  template:\n    metadata: {labels: {app: web}, annotations: {" + simcluster.ReadyAfterAnnotation + ": \"" + after + "\"}}\n" +
		"    spec: {containers: [{name: web, image: \"nginx:1.27\"}]}\n"
}
