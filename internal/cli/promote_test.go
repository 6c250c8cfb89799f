package cli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deployd/deployd/internal/githubtest"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/pkg/client"
)

// webApp is a Deployment running image.
func webApp(image string) string {
	return "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n" +
		"  template:\n    metadata: {labels: {app: web}}\n    spec: {initContainers: [{name: migrate, image: \"ghcr.io/acme/migrate:7\"}], containers: [{name: web, image: \"" + image + "\"}]}\n"
}

// waitEnvRecord waits until a record of the environment satisfies ok, and returns it.
func waitEnvRecord(t *testing.T, c *client.ClientWithResponses, env, what string, ok func(client.Record) bool) client.Record {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for {
		res, err := c.ListHistoryWithResponse(context.Background(), "acme", "web", &client.ListHistoryParams{Environment: &env})
		if err == nil && res.JSON200 != nil {
			for _, r := range res.JSON200.Records {
				if ok(r) {
					return r
				}
			}
		}
		if time.Now().After(deadline) {
			body := ""
			if res != nil {
				body = string(res.Body)
			}
			t.Fatalf("%s: %s: not within 40s; history %s", env, what, body)
		}
		time.Sleep(100 * time.Millisecond) // polling the endpoint under test, with a deadline
	}
}

func commitIs(sha string, phase client.RecordPhase) func(client.Record) bool {
	return func(r client.Record) bool { return r.Commit.Sha == sha && r.Phase == phase }
}

func errorOf(r client.Record) string {
	if r.Error == nil {
		return ""
	}
	return *r.Error
}

// imageIn is the web container's image in the namespace's Deployment.
func imageIn(t *testing.T, ns string) string {
	t.Helper()
	d, err := env.Client.AppsV1().Deployments(ns).Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Deployment web in %s: %v", ns, err)
	}
	return d.Spec.Template.Spec.Containers[0].Image
}

// TestPromotion runs one deployd with staging, production (auto) and eu (manual), both
// promoting from staging, each rendering its own directory deploy/{environment}.
func TestPromotion(t *testing.T) {
	gh := githubtest.New(t)
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "acme/web")
	c1 := repo.Commit("main", "1.4.2 everywhere", map[string]string{
		"deploy/staging/app.yaml": webApp("ghcr.io/acme/web:1.4.2"), "deploy/production/app.yaml": webApp("ghcr.io/acme/web:1.4.2"),
		"deploy/eu/app.yaml": webApp("ghcr.io/acme/web:1.4.2")})
	stagingNS, prodNS, euNS, stateNS := env.Namespace(t), env.Namespace(t), env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	url := srv.RepoURL("acme/web")
	entry := func(env, ns, extra string) string {
		return "  - {name: acme/web, url: '" + url + "', namespace: " + ns + ", environment: " + env + ", path: 'deploy/{environment}', interval: 0" + extra + "}\n"
	}
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n"+entry("staging", stagingNS, "")+entry("production", prodNS, ", promoteFrom: staging")+
		entry("eu", euNS, ", promoteFrom: staging, promotion: manual"))
	token := writeFile(t, dir, "token", "api-token\n")
	secret := writeFile(t, dir, "secret", "hook-secret\n")
	ghToken := writeFile(t, dir, "gh-token", "gh-token\n")
	base, logs, _ := startDaemon(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"),
		"--namespace", stateNS, "--api-token-file", token, "--webhook-secret-file", secret,
		"--github-token-file", ghToken, "--github-api-url", gh.URL, "--log-format", "json")
	c, _ := client.NewClientWithResponses(base, client.WithRequestEditorFn(bearer("api-token")))
	ctx := context.Background()
	sync := func(env string) {
		t.Helper()
		res, err := c.SyncWithResponse(ctx, "acme", "web", &client.SyncParams{Environment: &env})
		if err != nil || res.StatusCode() != 202 {
			t.Fatalf("sync %s: %v %s", env, err, res.Body)
		}
	}

	t.Run("staging succeeds, then production deploys it (auto)", func(t *testing.T) {
		s := waitEnvRecord(t, c, "staging", "c1 succeeded", commitIs(c1, client.RecordPhaseSucceeded))
		if want := []string{"ghcr.io/acme/migrate:7", "ghcr.io/acme/web:1.4.2"}; s.Images == nil || !cmp.Equal(want, *s.Images) {
			t.Errorf("staging's record images %v, want %v", s.Images, want)
		}
		p := waitEnvRecord(t, c, "production", "c1 succeeded", commitIs(c1, client.RecordPhaseSucceeded))
		if p.Trigger != client.AutoPromote {
			t.Errorf("production deployed c1 on trigger %s, want auto-promote\n%s", p.Trigger, logs)
		}
		if got := imageIn(t, prodNS); got != "ghcr.io/acme/web:1.4.2" {
			t.Errorf("production runs %s", got)
		}
	})

	t.Run("manual: eu waits, shows what waits, and deploys on the API's promotion", func(t *testing.T) {
		env := "eu"
		var st *client.PromotionStatus
		waitFor(t, "eu shows c1 waiting", func(ctx context.Context) bool {
			res, err := c.GetDeploymentWithResponse(ctx, "acme", "web", &client.GetDeploymentParams{Environment: &env})
			if err != nil || res.JSON200 == nil || len(res.JSON200.Environments) != 1 {
				return false
			}
			st = res.JSON200.Environments[0].Promotion
			return st != nil && st.WaitingCommit != nil && *st.WaitingCommit == c1 && st.Ready
		})
		if st.From != "staging" || st.Mode != client.Manual || !strings.Contains(*st.Reason, "waiting for a promotion request") {
			t.Errorf("eu's promotion status %+v", st)
		}
		res, err := c.PromoteWithResponse(ctx, "acme", "web", &client.PromoteParams{Environment: &env})
		if err != nil || res.StatusCode() != 202 {
			t.Fatalf("promote: %v %d %s", err, res.StatusCode(), res.Body)
		}
		r := waitEnvRecord(t, c, "eu", "c1 succeeded", commitIs(c1, client.RecordPhaseSucceeded))
		if r.Trigger != client.Promote {
			t.Errorf("eu deployed c1 on trigger %s, want promote", r.Trigger)
		}
		unauth, _ := client.NewClientWithResponses(base)
		if res, _ := unauth.PromoteWithResponse(ctx, "acme", "web", &client.PromoteParams{Environment: &env}); res == nil || res.StatusCode() != 401 {
			t.Errorf("promote without the token answered %v", res)
		}
		staging := "staging"
		if res, _ := c.PromoteWithResponse(ctx, "acme", "web", &client.PromoteParams{Environment: &staging}); res == nil || res.StatusCode() != 409 {
			t.Errorf("promote to staging (no promoteFrom) answered %v", res)
		}
		for _, bad := range []string{"main", strings.ToUpper(c1), c1 + "0"} {
			if res, _ := c.PromoteWithResponse(ctx, "acme", "web", &client.PromoteParams{Environment: &env, Commit: &bad}); res == nil || (res.StatusCode() != 400 && res.StatusCode() != 422) {
				t.Errorf("promote commit %q answered %v", bad, res)
			}
		}
	})

	var c2 string
	t.Run("production's render differs in image: blocked with the difference, nothing applied", func(t *testing.T) {
		c2 = repo.Commit("main", "production on 1.4.3", map[string]string{
			"deploy/staging/app.yaml": webApp("ghcr.io/acme/web:1.4.2") + "---\n" + cm("c2"), "deploy/production/app.yaml": webApp("ghcr.io/acme/web:1.4.3")})
		sync("staging")
		waitEnvRecord(t, c, "staging", "c2 succeeded", commitIs(c2, client.RecordPhaseSucceeded))
		b := waitEnvRecord(t, c, "production", "c2 blocked", commitIs(c2, client.RecordPhaseBlocked))
		if want := "image web: staging ran ghcr.io/acme/web:1.4.2, production would run ghcr.io/acme/web:1.4.3"; errorOf(b) != want {
			t.Errorf("blocked record's error %q, want %q", errorOf(b), want)
		}
		if got := imageIn(t, prodNS); got != "ghcr.io/acme/web:1.4.2" {
			t.Errorf("a blocked promotion changed production: it runs %s", got)
		}
		st := envStatusOf(t, c, "production")
		if st.DeployedCommit == nil || *st.DeployedCommit != c1 || st.Phase != client.EnvironmentPhaseBlocked {
			t.Errorf("production's status: deployed %v, phase %s; want c1, blocked", st.DeployedCommit, st.Phase)
		}
	})

	var c3 string
	t.Run("staging fails: production is blocked", func(t *testing.T) {
		c3 = repo.Commit("main", "staging broken", map[string]string{
			"deploy/staging/app.yaml":    webApp("ghcr.io/acme/web:1.4.2") + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: kube-system}\n",
			"deploy/production/app.yaml": webApp("ghcr.io/acme/web:1.4.2")})
		sync("staging")
		s := waitEnvRecord(t, c, "staging", "c3 in error", commitIs(c3, client.RecordPhaseError))
		b := waitEnvRecord(t, c, "production", "c3 blocked", commitIs(c3, client.RecordPhaseBlocked))
		want := "staging has not succeeded with " + c3[:12] + ": its " + s.Name + " error: "
		if !strings.HasPrefix(errorOf(b), want) {
			t.Errorf("blocked record's error %q, want it to start %q", errorOf(b), want)
		}
	})

	t.Run("manual: the CLI promotes, and says when the gate blocks", func(t *testing.T) {
		code, out, errOut := runCLI(t, "promote", "acme/web", "--to", "eu", "--commit", c3, "--wait", "--timeout", "40s", "--server", base, "--token-file", token)
		if code != exitFailed || !strings.Contains(out, "blocked: staging has not succeeded with "+c3[:12]) {
			t.Errorf("promote c3: exit %d\n%s%s", code, out, errOut)
		}
		code, out, errOut = runCLI(t, "promote", "acme/web", "--to", "eu", "--commit", c2, "--wait", "--timeout", "40s", "--server", base, "--token-file", token)
		if code != 0 || !strings.Contains(out, "succeeded") {
			t.Errorf("promote c2: exit %d\n%s%s", code, out, errOut)
		}
		if r := waitEnvRecord(t, c, "eu", "c2 succeeded", commitIs(c2, client.RecordPhaseSucceeded)); r.Trigger != client.Promote {
			t.Errorf("eu's c2 trigger %s", r.Trigger)
		}
	})

	t.Run("manual: a GitHub deployment event promotes through the gate", func(t *testing.T) {
		body := `{"action":"created","deployment":{"id":7001,"sha":"` + c3 + `","ref":"main","environment":"eu"},"repository":{"full_name":"acme/web"}}`
		if code := signedDelivery(t, base, "hook-secret", "deployment", body); code != 202 {
			t.Fatalf("deployment event answered %d", code)
		}
		b := waitEnvRecord(t, c, "eu", "c3 blocked from GitHub", func(r client.Record) bool {
			return r.Commit.Sha == c3 && r.Phase == client.RecordPhaseBlocked && r.Trigger == client.GithubDeployment
		})
		if !strings.HasPrefix(errorOf(b), "staging has not succeeded with "+c3[:12]) {
			t.Errorf("blocked record's error %q", errorOf(b))
		}
		waitStatuses(t, gh, 7001, []string{"failure"})
		body = `{"action":"created","deployment":{"id":7002,"sha":"` + c1 + `","ref":"main","environment":"eu"},"repository":{"full_name":"acme/web"}}`
		if code := signedDelivery(t, base, "hook-secret", "deployment", body); code != 202 {
			t.Fatalf("deployment event answered %d", code)
		}
		waitStatuses(t, gh, 7002, []string{"queued", "in_progress", "success"})
	})
}

// envStatusOf reads one environment's status.
func envStatusOf(t *testing.T, c *client.ClientWithResponses, env string) client.Environment {
	t.Helper()
	res, err := c.GetDeploymentWithResponse(context.Background(), "acme", "web", &client.GetDeploymentParams{Environment: &env})
	if err != nil || res.JSON200 == nil || len(res.JSON200.Environments) != 1 {
		t.Fatalf("status of %s: %v", env, err)
	}
	return res.JSON200.Environments[0]
}

// TestPromotionAcrossClusters runs two deployds sharing the GitHub stand-in: one serves
// staging, the other production with promoteFrom staging, which it does not serve, so it
// reads staging's outcomes (and images) from GitHub's deployments and statuses.
func TestPromotionAcrossClusters(t *testing.T) {
	gh := githubtest.New(t)
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "acme/web")
	c1 := repo.Commit("main", "1.4.2 everywhere", map[string]string{
		"deploy/staging/app.yaml": webApp("ghcr.io/acme/web:1.4.2"), "deploy/production/app.yaml": webApp("ghcr.io/acme/web:1.4.2")})
	url := srv.RepoURL("acme/web")
	dir := t.TempDir()
	ghToken := writeFile(t, dir, "gh-token", "gh-token\n")
	token := writeFile(t, dir, "token", "api-token\n")
	start := func(name, entry string) (*client.ClientWithResponses, string) {
		appNS, stateNS := env.Namespace(t), env.Namespace(t)
		cfg := writeFile(t, dir, name+".yaml", "repos:\n  - {name: acme/web, url: '"+url+"', namespace: "+appNS+", path: 'deploy/{environment}', "+entry+"}\n")
		base, _, _ := startDaemon(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, name+"-cache"),
			"--namespace", stateNS, "--api-token-file", token, "--github-token-file", ghToken, "--github-api-url", gh.URL, "--log-format", "json")
		c, _ := client.NewClientWithResponses(base, client.WithRequestEditorFn(bearer("api-token")))
		return c, appNS
	}
	staging, _ := start("staging", "environment: staging, interval: 0")
	production, prodNS := start("production", "environment: production, interval: 1s, promoteFrom: staging")

	t.Run("production deploys what succeeded in staging, seen on GitHub", func(t *testing.T) {
		waitEnvRecord(t, staging, "staging", "c1 succeeded", commitIs(c1, client.RecordPhaseSucceeded))
		waitEnvRecord(t, production, "production", "c1 succeeded", commitIs(c1, client.RecordPhaseSucceeded))
		if got := imageIn(t, prodNS); got != "ghcr.io/acme/web:1.4.2" {
			t.Errorf("production runs %s", got)
		}
	})
	t.Run("a commit staging has not deployed waits; once it ran other images, production is blocked", func(t *testing.T) {
		c2 := repo.Commit("main", "production on 1.4.3", map[string]string{
			"deploy/staging/app.yaml": webApp("ghcr.io/acme/web:1.4.2") + "---\n" + cm("c2"), "deploy/production/app.yaml": webApp("ghcr.io/acme/web:1.4.3")})
		waitFor(t, "production shows c2 waiting for staging", func(ctx context.Context) bool {
			p := envStatusOf(t, production, "production").Promotion
			return p != nil && p.WaitingCommit != nil && *p.WaitingCommit == c2 && !p.Ready && strings.Contains(*p.Reason, "waiting for staging to succeed with it")
		})
		envName := "staging"
		if res, err := staging.SyncWithResponse(context.Background(), "acme", "web", &client.SyncParams{Environment: &envName}); err != nil || res.StatusCode() != 202 {
			t.Fatalf("sync staging: %v", err)
		}
		waitEnvRecord(t, staging, "staging", "c2 succeeded", commitIs(c2, client.RecordPhaseSucceeded))
		b := waitEnvRecord(t, production, "production", "c2 blocked", commitIs(c2, client.RecordPhaseBlocked))
		if want := "image web: staging ran ghcr.io/acme/web:1.4.2, production would run ghcr.io/acme/web:1.4.3"; errorOf(b) != want {
			t.Errorf("blocked record's error %q, want %q", errorOf(b), want)
		}
		if got := imageIn(t, prodNS); got != "ghcr.io/acme/web:1.4.2" {
			t.Errorf("a blocked promotion changed production: it runs %s", got)
		}
		// Polled every second (each poll asks GitHub again), the refusal is recorded once.
		asked := func() int {
			n := 0
			for _, call := range gh.Calls() {
				if call.Method == "GET" && call.Path == "/repos/acme/web/deployments" {
					n++
				}
			}
			return n
		}
		before := asked()
		waitFor(t, "three more polls", func(context.Context) bool { return asked() >= before+3 })
		res, _ := production.ListHistoryWithResponse(context.Background(), "acme", "web", &client.ListHistoryParams{})
		blocked := 0
		for _, r := range res.JSON200.Records {
			if r.Phase == client.RecordPhaseBlocked {
				blocked++
			}
		}
		if blocked != 1 {
			t.Errorf("%d blocked records, want 1", blocked)
		}
	})
}
