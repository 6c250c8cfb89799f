package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/daemon"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/preview"
)

// reports records what deployd publishes, as the GitHub publisher would be given it.
type reports struct {
	mu       sync.Mutex
	reports  []preview.Report
	removals []string
}

func (r *reports) Publish(ctx context.Context, rep preview.Report) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, rep)
	return nil
}

func (r *reports) Remove(ctx context.Context, owner, repo string, number int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removals = append(r.removals, fmt.Sprintf("%s/%s#%d", owner, repo, number))
	return nil
}

// last returns the last report on commit.
func (r *reports) last(commit string) (preview.Report, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.reports) - 1; i >= 0; i-- {
		if r.reports[i].HeadSHA == commit {
			return r.reports[i], true
		}
	}
	return preview.Report{}, false
}

func webDeployment(replicas int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: %d
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "nginx:1.27"}]}
`, replicas)
}

func namedCM(name, value string) string {
	return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\ndata: {value: \"" + value + "\"}\n"
}

// pullRequestHook sends a signed pull_request event of shop/web against main.
func pullRequestHook(t *testing.T, base, action string, number int, head, headRepoURL string) {
	t.Helper()
	body := fmt.Sprintf(`{"action":%q,"number":%d,"pull_request":{"head":{"sha":%q,"repo":{"clone_url":%q}},"base":{"ref":"main"}},"repository":{"full_name":"shop/web"}}`,
		action, number, head, headRepoURL)
	if code := signedDelivery(t, base, "hook-secret", "pull_request", body); code != http.StatusAccepted {
		t.Fatalf("pull_request %s answered %d", action, code)
	}
}

// donePreview waits until pull request number's preview of head has ended.
func donePreview(t *testing.T, base string, number int, head string) preview.Result {
	t.Helper()
	var got preview.Preview
	waitFor(t, fmt.Sprintf("the preview of #%d", number), func(ctx context.Context) bool {
		resp, err := http.Get(fmt.Sprintf("%s/deployment/shop/web/previews/%d", base, number))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		got = preview.Preview{}
		return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&got) == nil && len(got.Environments) == 1 &&
			got.Environments[0].State != preview.StatePending && got.Environments[0].Commit == head
	})
	return got.Environments[0]
}

// kubePatches reads how many PATCH requests deployd sent to the API server.
func kubePatches(t *testing.T, base string) int {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var count int
		if line := sc.Text(); strings.HasPrefix(line, `deployd_kube_requests_total{code=`) && strings.Contains(line, `method="PATCH"`) {
			_, _ = fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &count)
			n += count
		}
	}
	return n
}

// summary is a preview's changes, by object name and field.
func summary(r preview.Result) map[string][]string {
	out := map[string][]string{}
	add := func(kind string, objs []preview.ChangedObject) {
		for _, o := range objs {
			out[kind] = append(out[kind], o.Object)
			for _, f := range o.Fields {
				out[kind] = append(out[kind], "  "+f.Path+": "+f.From+" → "+f.To)
			}
		}
	}
	add("added", r.Added)
	add("changed", r.Changed)
	add("pruned", r.Pruned)
	return out
}

// TestPullRequestPreviews runs deployd with pull request previews: each event is
// previewed from refs/pull/N/head, dry-run as the repo, compared with what deployd
// applied, and published; nothing is ever applied from a pull request.
func TestPullRequestPreviews(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	main := map[string]string{
		"deploy/manifests/web.yaml":      webDeployment(1),
		"deploy/manifests/settings.yaml": namedCM("settings", "one"),
		"deploy/manifests/old.yaml":      namedCM("old", "one"),
	}
	repo.Commit("main", "one", main)
	appNS, stateNS := env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+appNS+", interval: 0}\n")
	secret := writeFile(t, dir, "secret", "hook-secret\n")
	token := writeFile(t, dir, "token", "api-token\n")
	pub := &reports{}
	base, logs, _ := startDaemonWith(t, func(o *daemon.Options) { o.PreviewPublisher = pub },
		"--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"), "--namespace", stateNS,
		"--webhook-secret-file", secret, "--api-token-file", token, "--public-url", "https://deployd.example.com", "--log-format", "json")
	waitRecords(t, stateNS, config.Repo{Name: "shop/web", Environment: "production"}, "the first deployment succeeds", func(recs []history.Record) bool {
		return len(recs) == 1 && recs[0].Phase == history.Succeeded
	})
	unchanged := func(t *testing.T) {
		t.Helper()
		d, err := env.Client.AppsV1().Deployments(appNS).Get(context.Background(), "web", metav1.GetOptions{})
		if err != nil || *d.Spec.Replicas != 1 {
			t.Errorf("the Deployment was changed by a preview: %v", err)
		}
		if _, err := env.Client.CoreV1().ConfigMaps(appNS).Get(context.Background(), "extra", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("a preview created ConfigMap extra: %v", err)
		}
		if _, err := env.Client.CoreV1().ConfigMaps(appNS).Get(context.Background(), "old", metav1.GetOptions{}); err != nil {
			t.Errorf("a preview pruned ConfigMap old: %v", err)
		}
	}

	t.Run("a replica count changed and a ConfigMap added show as exactly those two", func(t *testing.T) {
		repo.Checkout("main")
		repo.Commit("scale", "scale", map[string]string{"deploy/manifests/web.yaml": webDeployment(2), "deploy/manifests/extra.yaml": namedCM("extra", "x")})
		head := repo.PullRequest(1, "scale")
		pullRequestHook(t, base, "opened", 1, head, srv.RepoURL("shop/web"))
		res := donePreview(t, base, 1, head)
		want := map[string][]string{
			"added":   {"ConfigMap/" + appNS + "/extra"},
			"changed": {"Deployment/" + appNS + "/web", "  spec.replicas: 1 → 2"},
		}
		if diff := cmp.Diff(want, summary(res)); diff != "" || res.Unchanged != 2 || res.State != preview.StateDone {
			t.Errorf("preview (-want +got)\n%s\n%+v\n%s", diff, res, logs)
		}
		rep, ok := pub.last(head)
		if !ok || rep.Conclusion != "success" || rep.Environment != "production" || rep.PRNumber != 1 || rep.Owner != "shop" || rep.Repo != "web" ||
			rep.Title != "1 to add, 1 to change, 0 to prune, 2 unchanged" || !strings.Contains(rep.Summary, "`spec.replicas` | `1` | `2`") ||
			rep.DetailsURL != "https://deployd.example.com/deployment/shop/web/previews/1?environment=production" {
			t.Errorf("published %+v", rep)
		}
		unchanged(t)
	})
	t.Run("an object removed shows as pruned", func(t *testing.T) {
		repo.Checkout("main")
		repo.Commit("remove-old", "remove old", map[string]string{"deploy/manifests/old.yaml": ""})
		head := repo.PullRequest(2, "remove-old")
		pullRequestHook(t, base, "opened", 2, head, srv.RepoURL("shop/web"))
		res := donePreview(t, base, 2, head)
		if diff := cmp.Diff(map[string][]string{"pruned": {"ConfigMap/" + appNS + "/old"}}, summary(res)); diff != "" || res.Unchanged != 2 {
			t.Errorf("preview (-want +got)\n%s\n%+v", diff, res)
		}
		unchanged(t)
	})
	t.Run("a manifest the API server refuses fails with its file and line", func(t *testing.T) {
		repo.Checkout("main")
		bad := strings.Replace(webDeployment(1), "replicas: 1", "replicas: many", 1)
		head := repo.Commit("bad", "bad", map[string]string{"deploy/manifests/web.yaml": "# the app\n" + bad})
		repo.PullRequest(3, "bad")
		pullRequestHook(t, base, "opened", 3, head, srv.RepoURL("shop/web"))
		res := donePreview(t, base, 3, head)
		if res.State != preview.StateFailed || len(res.Problems) != 1 || res.Problems[0].File != "deploy/manifests/web.yaml" || res.Problems[0].Line != 2 ||
			res.Problems[0].Object != "Deployment/"+appNS+"/web" {
			t.Errorf("preview %+v", res)
		}
		rep, _ := pub.last(head)
		if rep.Conclusion != "failure" || len(rep.Annotations) != 1 || rep.Annotations[0].Path != "deploy/manifests/web.yaml" || rep.Annotations[0].Line != 2 {
			t.Errorf("published %+v", rep)
		}
	})
	t.Run("a fork's ClusterRole is refused without a request that writes", func(t *testing.T) {
		w, err := env.Client.RbacV1().ClusterRoles().Watch(context.Background(), metav1.ListOptions{FieldSelector: "metadata.name=" + appNS + "-admin"})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		patches := kubePatches(t, base)
		if patches == 0 {
			t.Fatal("no PATCH request counted, not even the deployment's: the count cannot tell")
		}
		repo.Checkout("main")
		role := "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: " + appNS + "-admin}\nrules: [{apiGroups: ['*'], resources: ['*'], verbs: ['*']}]\n"
		head := repo.Commit("fork", "escalate", map[string]string{"deploy/manifests/role.yaml": role, "deploy/manifests/extra.yaml": namedCM("extra", "x")})
		repo.PullRequest(4, "fork")
		// The fork's own URL is never fetched: it points at nothing here.
		pullRequestHook(t, base, "opened", 4, head, "http://127.0.0.1:9/attacker/web.git")
		res := donePreview(t, base, 4, head)
		if res.State != preview.StateFailed || len(res.Problems) != 1 || res.Problems[0].File != "deploy/manifests/role.yaml" ||
			!strings.Contains(res.Problems[0].Message, "is cluster-scoped") {
			t.Errorf("preview %+v", res)
		}
		if got := kubePatches(t, base); got != patches {
			t.Errorf("%d PATCH requests (dry runs included) were sent for a refused set", got-patches)
		}
		select {
		case ev := <-w.ResultChan():
			t.Errorf("the ClusterRole was written: %s", ev.Type)
		default:
		}
		if _, err := env.Client.RbacV1().ClusterRoles().Get(context.Background(), appNS+"-admin", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the ClusterRole exists: %v", err)
		}
		unchanged(t)
	})
	t.Run("a closed pull request's preview is removed", func(t *testing.T) {
		pullRequestHook(t, base, "closed", 1, "", "")
		waitFor(t, "the preview removed", func(ctx context.Context) bool {
			resp, err := http.Get(base + "/deployment/shop/web/previews/1")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusNotFound
		})
		waitFor(t, "the publisher told", func(ctx context.Context) bool {
			pub.mu.Lock()
			defer pub.mu.Unlock()
			return strings.Join(pub.removals, ",") == "shop/web#1"
		})
		resp, err := http.Get(base + "/deployment/shop/web/previews")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var list struct{ Previews []preview.Preview }
		_ = json.NewDecoder(resp.Body).Decode(&list)
		var numbers []int
		for _, p := range list.Previews {
			numbers = append(numbers, p.Number)
		}
		if diff := cmp.Diff([]int{2, 3, 4}, numbers); diff != "" {
			t.Errorf("previews listed (-want +got)\n%s", diff)
		}
	})
	t.Run("deployd diff of a local tree or a ref", func(t *testing.T) {
		tree := t.TempDir()
		for name, content := range map[string]string{"src/main.go": "package main\n", "deploy/manifests/web.yaml": main["deploy/manifests/web.yaml"],
			"deploy/manifests/settings.yaml": main["deploy/manifests/settings.yaml"], "deploy/manifests/old.yaml": main["deploy/manifests/old.yaml"]} {
			if err := os.MkdirAll(filepath.Join(tree, filepath.Dir(name)), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, tree, name, content)
		}
		args := []string{"diff", "shop/web", "--server", base, "--token-file", token, "--dir", tree}
		code, stdout, stderr := runCLI(t, args...)
		if code != 0 || !strings.Contains(stdout, "no changes (3 objects unchanged)") {
			t.Errorf("unchanged tree: exit %d\n%s%s", code, stdout, stderr)
		}
		if err := os.WriteFile(filepath.Join(tree, "deploy/manifests/web.yaml"), []byte(webDeployment(3)), 0o644); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr = runCLI(t, args...)
		if code != 1 || !strings.Contains(stdout, "~ Deployment/"+appNS+"/web\n      spec.replicas: 1 → 3\n") {
			t.Errorf("changed tree: exit %d\n%s%s", code, stdout, stderr)
		}
		if err := os.WriteFile(filepath.Join(tree, "deploy/manifests/web.yaml"), []byte("kind: [\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr = runCLI(t, args...)
		if code != 2 || !strings.Contains(stdout, "deploy/manifests/web.yaml:1") {
			t.Errorf("broken tree: exit %d\n%s%s", code, stdout, stderr)
		}
		code, stdout, stderr = runCLI(t, "diff", "shop/web", "--server", base, "--token-file", token, "--ref", "refs/pull/2/head")
		if code != 1 || !strings.Contains(stdout, "  - ConfigMap/"+appNS+"/old\n") {
			t.Errorf("--ref of a pull request: exit %d\n%s%s", code, stdout, stderr)
		}
		code, stdout, stderr = runCLI(t, "diff", "shop/web", "--server", base, "--token-file", token, "--ref", "main")
		if code != 0 {
			t.Errorf("--ref main: exit %d\n%s%s", code, stdout, stderr)
		}
		code, _, stderr = runCLI(t, "diff", "shop/web", "--server", base, "--token-file", token, "--dir", filepath.Join(tree, "deploy"))
		if code != 2 || !strings.Contains(stderr, "has no files under deploy/manifests/: give the repo's root to --dir") {
			t.Errorf("--dir below the repo's root: exit %d %s", code, stderr)
		}
		code, _, stderr = runCLI(t, "diff", "shop/web", "--server", base, "--dir", tree)
		if code != 2 || !strings.Contains(stderr, "401") {
			t.Errorf("without the token: exit %d %s", code, stderr)
		}
		unchanged(t)
	})
}
