package install

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/realnode"
	"github.com/deployd/deployd/internal/webhook"
	"github.com/deployd/deployd/pkg/client"
)

// app is the sample app's manifests: two replicas of hack/sampleapp whose readiness
// probe decides the rollout, and a Service in front.
var app = realnode.SampleAppManifests

// TestInstall installs deployd on a real node the way the README tells users, and
// follows one app from its git repository to Pods serving it, and a push to a redeploy.
func TestInstall(t *testing.T) {
	realnode.Need(t)
	ctx := t.Context()
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	opts := realnode.DefaultOptions()
	opts.Progress = os.Stderr
	started := time.Now()
	n := realnode.StartForTest(t, opts)
	t.Logf("cluster and real node Ready in %s", time.Since(started).Round(10*time.Millisecond))
	cs := kubernetes.NewForConfigOrDie(n.Cluster.Config)

	built := time.Now()
	if err := n.LoadDeployd(ctx, root, nil); err != nil {
		t.Fatal(err)
	}
	sample, err := realnode.SampleApp(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.LoadImage(ctx, sample, realnode.SampleAppImage); err != nil {
		t.Fatal(err)
	}
	t.Logf("images built and loaded in %s", time.Since(built).Round(10*time.Millisecond))

	// The host's git server, bound to the node address so Pods reach it.
	git := gittest.NewServerOn(t, realnode.Address)
	repo := git.NewRepo(t, "haraldsk/an-application")
	repo.Commit("main", "first", map[string]string{"deploy/manifests/app.yaml": app("version one")})
	unready := git.NewRepo(t, "haraldsk/an-other-application")
	// A kustomization: kustomize renders in deployd's confined worker process (seccomp,
	// rlimits), so this proves the worker runs inside deployd's own Pod as well.
	unready.Commit("main", "never ready", map[string]string{
		"deploy/manifests/kustomization.yaml": "resources: [app.yaml]\n",
		"deploy/manifests/app.yaml":           app("never", "--never-ready"),
	})

	// README's steps: kubectl apply -f k8s/, the Secrets, the repos ConfigMap edited.
	applied := time.Now()
	reposYAML := "repos:\n" +
		"  - {name: haraldsk/an-application, url: '" + git.RepoURL("haraldsk/an-application") + "', namespace: an-application, environment: dev, interval: 0}\n" +
		"  - {name: haraldsk/an-other-application, url: '" + git.RepoURL("haraldsk/an-other-application") + "', namespace: an-other-application, environment: dev, interval: 0, timeout: 15s}\n"
	in, err := n.Install(ctx, root, reposYAML)
	if err != nil {
		t.Fatal(err)
	}
	secret := in.WebhookSecret

	t.Run("both replicas turn Ready through their probes and one leads", func(t *testing.T) {
		if err := n.WaitDeployd(ctx); err != nil {
			t.Fatalf("%v\n%s", err, podStates(cs, "deployd")())
		}
		t.Logf("kubectl apply -f k8s/ → both replicas Ready in %s", time.Since(applied).Round(10*time.Millisecond))
		pods, err := cs.CoreV1().Pods("deployd").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=deployd"})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			if p.Spec.NodeName != realnode.NodeName {
				t.Errorf("pod %s runs on %s, want the real node", p.Name, p.Spec.NodeName)
			}
		}
		waitFor(t, time.Minute, "one replica holding the leader lease", func(ctx context.Context) (bool, error) {
			return holder(t, cs) != "", nil
		}, podStates(cs, "deployd"))
	})

	api, err := client.NewClientWithResponses(in.URL)
	if err != nil {
		t.Fatal(err)
	}
	// status returns the phase of a repo's newest deployment and its error, as the API says.
	status := func(ctx context.Context, repo string) (phase, reason string) {
		res, err := api.GetDeploymentWithResponse(ctx, "haraldsk", repo, &client.GetDeploymentParams{})
		if err != nil || res.JSON200 == nil || len(res.JSON200.Environments) == 0 {
			return "", ""
		}
		env := res.JSON200.Environments[0]
		if env.Current != nil && env.Current.Error != nil {
			reason = *env.Current.Error
		}
		return string(env.Phase), reason
	}
	phase := func(ctx context.Context) string {
		p, _ := status(ctx, "an-application")
		return p
	}
	push := func(t *testing.T) {
		t.Helper()
		body := []byte(`{"ref":"refs/heads/main","repository":{"full_name":"haraldsk/an-application"}}`)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, in.URL+"/webhooks/github", bytes.NewReader(body))
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Hub-Signature-256", webhook.Signature([]byte(secret), body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("webhook answered %d: %s", resp.StatusCode, answer)
		}
	}

	t.Run("deployd in its Pod deploys the app from the host's git server; the API answers through the Service", func(t *testing.T) {
		waitFor(t, 2*time.Minute, "the app's deployment succeeded, as the status API says", func(ctx context.Context) (bool, error) {
			return phase(ctx) == "succeeded", nil
		}, podStates(cs, "an-application"))
		if err := n.WaitService(ctx, "an-application", "web"); err != nil {
			t.Fatal(err)
		}
		appSvc, err := cs.CoreV1().Services("an-application").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := get(t, "http://"+appSvc.Spec.ClusterIP+"/", "version one\n", podStates(cs, "an-application")); got != "version one\n" {
			t.Errorf("the app answers %q, want version one", got)
		}
	})

	t.Run("a push and its signed webhook, sent to the Service, redeploy the app", func(t *testing.T) {
		repo.Commit("main", "second", map[string]string{"deploy/manifests/app.yaml": app("version two")})
		pushed := time.Now()
		push(t)
		appSvc, err := cs.CoreV1().Services("an-application").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		get(t, "http://"+appSvc.Spec.ClusterIP+"/", "version two\n", podStates(cs, "an-application"))
		t.Logf("push → the app's Service answers the new version in %s", time.Since(pushed).Round(10*time.Millisecond))
	})

	t.Run("deployd's root filesystem is read-only as the container runs, and it misses nothing", func(t *testing.T) {
		pods, err := cs.CoreV1().Pods("deployd").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=deployd"})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			if len(p.Status.ContainerStatuses) != 1 {
				t.Fatalf("pod %s: container statuses %v", p.Name, p.Status.ContainerStatuses)
			}
			raw, err := n.ContainerSpec(p.Status.ContainerStatuses[0].ContainerID)
			if err != nil {
				t.Fatal(err)
			}
			var spec ociSpec
			if err := json.Unmarshal(raw, &spec); err != nil {
				t.Fatal(err)
			}
			got := map[string]any{"root read-only": spec.Root.Readonly, "uid": spec.Process.User.UID,
				"no new privileges": spec.Process.NoNewPrivileges, "capabilities": len(spec.Process.Capabilities.Bounding)}
			for _, m := range spec.Mounts {
				if strings.HasPrefix(m.Destination, "/etc/deployd/") || m.Destination == "/tmp" || m.Destination == "/var/cache/deployd" {
					got[m.Destination+" read-only"] = slices.Contains(m.Options, "ro")
				}
			}
			want := map[string]any{"root read-only": true, "uid": uint32(65532), "no new privileges": true, "capabilities": 0,
				"/tmp read-only": false, "/var/cache/deployd read-only": false,
				"/etc/deployd/config read-only": true, "/etc/deployd/webhook read-only": true, "/etc/deployd/api read-only": true,
				"/etc/deployd/github read-only": true, "/etc/deployd/git read-only": true}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("pod %s runs with (-want +got):\n%s", p.Name, diff)
			}
			// Both deployed and served: had it needed to write outside its volumes, its log says so.
			log, err := cs.CoreV1().Pods("deployd").GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, bad := range []string{"read-only file system", "permission denied"} {
				if bytes.Contains(bytes.ToLower(log), []byte(bad)) {
					t.Errorf("pod %s logs %q:\n%s", p.Name, bad, log)
				}
			}
		}
	})

	t.Run("a container that never turns ready ends as failed, with the reason", func(t *testing.T) {
		var reason string
		waitFor(t, 2*time.Minute, "an-other-application failed", func(ctx context.Context) (bool, error) {
			var p string
			p, reason = status(ctx, "an-other-application")
			return p == "failed", nil
		}, podStates(cs, "an-other-application"))
		if !strings.Contains(reason, "timed out") || !strings.Contains(reason, "Deployment web") {
			t.Errorf("failed with reason %q, want the timeout waiting for Deployment web", reason)
		}
	})

	t.Run("a broken manifest ends as error, with the reason, and the running version stays", func(t *testing.T) {
		repo.Commit("main", "broken", map[string]string{"deploy/manifests/app.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web\n"})
		push(t)
		var reason string
		waitFor(t, time.Minute, "an-application's broken commit in error", func(ctx context.Context) (bool, error) {
			var p string
			p, reason = status(ctx, "an-application")
			return p == "error", nil
		}, podStates(cs, "an-application"))
		if !strings.Contains(reason, "app.yaml") {
			t.Errorf("error reason %q does not name the broken file", reason)
		}
		appSvc, err := cs.CoreV1().Services("an-application").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		get(t, "http://"+appSvc.Spec.ClusterIP+"/", "version two\n", podStates(cs, "an-application"))
	})

	t.Run("deleting the leader Pod hands the lease over and the next push deploys", func(t *testing.T) {
		leader := holder(t, cs)
		if err := cs.CoreV1().Pods("deployd").Delete(ctx, leader, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		deleted := time.Now()
		waitFor(t, time.Minute, "another replica leading", func(ctx context.Context) (bool, error) {
			h := holder(t, cs)
			return h != "" && h != leader, nil
		}, podStates(cs, "deployd"))
		t.Logf("leader Pod deleted → lease moved in %s", time.Since(deleted).Round(10*time.Millisecond))
		repo.Commit("main", "third", map[string]string{"deploy/manifests/app.yaml": app("version three")})
		waitFor(t, time.Minute, "deployd's Service answering", func(ctx context.Context) (bool, error) {
			return phase(ctx) != "", nil
		}, podStates(cs, "deployd"))
		push(t)
		appSvc, err := cs.CoreV1().Services("an-application").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		get(t, "http://"+appSvc.Spec.ClusterIP+"/", "version three\n", podStates(cs, "an-application"))
	})

	t.Run("a rolling restart of both replicas loses no webhook", func(t *testing.T) {
		appSvc, err := cs.CoreV1().Services("an-application").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pods, err := cs.CoreV1().Pods("deployd").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=deployd"})
		if err != nil {
			t.Fatal(err)
		}
		restarted := make(chan error, 1)
		began := time.Now()
		go func() { restarted <- rollingRestart(ctx, cs, pods.Items) }()

		// 200 deliveries, a new commit every 20, at most 3 at a time (all come from one
		// address through the ClusterIP, and deployd reads 2 per address at once), each
		// retried on 503 as GitHub redelivers; a refused or cut connection is a loss.
		const deliveries, perCommit = 200, 20
		sem := make(chan struct{}, 3)
		results := make(chan delivery, deliveries)
		last := ""
		for i := 0; i < deliveries; i++ {
			if i%perCommit == 0 {
				last = fmt.Sprintf("storm %d", i/perCommit)
				repo.Commit("main", last, map[string]string{"deploy/manifests/app.yaml": app(last)})
			}
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				results <- deliver(ctx, in.URL, secret)
			}()
			select {
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(100 * time.Millisecond): // paced over the restart, as pushes arrive
			}
		}
		var retried, failed int
		for i := 0; i < deliveries; i++ {
			d := <-results
			retried += d.retries
			if d.err != nil {
				failed++
				t.Errorf("delivery lost: %v", d.err)
			}
		}
		if err := <-restarted; err != nil {
			t.Fatalf("rolling restart: %v\n%s", err, podStates(cs, "deployd")())
		}
		t.Logf("rolling restart of both replicas took %s; %d deliveries, %d lost, %d 503s retried", time.Since(began).Round(100*time.Millisecond), deliveries, failed, retried)
		get(t, "http://"+appSvc.Spec.ClusterIP+"/", last+"\n", podStates(cs, "an-application"))
	})

	t.Run("kubectl apply of the repos ConfigMap acts on every replica within seconds", func(t *testing.T) {
		third := git.NewRepo(t, "haraldsk/a-third-application")
		third.Commit("main", "first", map[string]string{"deploy/manifests/app.yaml": app("third")})
		const added = "haraldsk/a-third-application"
		edited := reposYAML + "  - {name: " + added + ", url: '" + git.RepoURL(added) + "', namespace: a-third-application, environment: dev, interval: 0}\n"
		pods, err := cs.CoreV1().Pods("deployd").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=deployd"})
		if err != nil {
			t.Fatal(err)
		}
		var replicas []*client.ClientWithResponses
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil || !ready(p) {
				continue
			}
			c, err := client.NewClientWithResponses("http://" + p.Status.PodIP + ":8080")
			if err != nil {
				t.Fatal(err)
			}
			replicas = append(replicas, c)
		}
		if len(replicas) != 2 {
			t.Fatalf("%d deployd replicas Ready, want 2\n%s", len(replicas), podStates(cs, "deployd")())
		}
		lists := func(ctx context.Context, c *client.ClientWithResponses) bool {
			res, err := c.ListDeploymentsWithResponse(ctx, &client.ListDeploymentsParams{})
			if err != nil || res.JSON200 == nil {
				return false
			}
			return slices.ContainsFunc(res.JSON200.Deployments, func(s client.Summary) bool { return s.Repo == added })
		}
		indented := "    " + strings.ReplaceAll(strings.TrimRight(edited, "\n"), "\n", "\n    ") + "\n"
		applied := time.Now()
		if err := n.Kubectl(ctx, root, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deployd-repos, namespace: deployd}\ndata:\n  repos.yaml: |\n"+indented,
			"apply", "--server-side", "-f", "-"); err != nil {
			t.Fatal(err)
		}
		// Polled finely: the figure is the latency. The kubelet's own refresh of the
		// mounted file waits for its sync period (here 5 s; a minute by default).
		if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			for _, c := range replicas {
				if !lists(ctx, c) {
					return false, nil
				}
			}
			return true, nil
		}); err != nil {
			t.Fatalf("waiting for both replicas to list %s: %v\n%s", added, err, podStates(cs, "deployd")())
		}
		t.Logf("kubectl apply of the repos ConfigMap → both replicas list the added repo in %s", time.Since(applied).Round(10*time.Millisecond))
	})
}

// delivery is the outcome of one webhook delivery: err when it was lost.
type delivery struct {
	retries int
	err     error
}

// deliver sends one signed push delivery on a new connection, retrying 503 (up to 10
// times, 1 s apart) as GitHub would redeliver it.
func deliver(ctx context.Context, url, secret string) delivery {
	body := []byte(`{"ref":"refs/heads/main","repository":{"full_name":"haraldsk/an-application"}}`)
	c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var d delivery
	for ; d.retries <= 10; d.retries++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/webhooks/github", bytes.NewReader(body))
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Hub-Signature-256", webhook.Signature([]byte(secret), body))
		resp, err := c.Do(req)
		if err != nil {
			d.err = err
			return d
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode/100 == 2:
			return d
		case resp.StatusCode != http.StatusServiceUnavailable:
			d.err = fmt.Errorf("answered %d: %s", resp.StatusCode, answer)
			return d
		}
		select {
		case <-ctx.Done():
			d.err = ctx.Err()
			return d
		case <-time.After(time.Second): // a redelivery's pause
		}
	}
	d.err = fmt.Errorf("503 %d times", d.retries)
	return d
}

// rollingRestart deletes the given deployd Pods one after the other, each once a
// replacement is Ready, and returns when the Deployment is whole again.
func rollingRestart(ctx context.Context, cs kubernetes.Interface, pods []corev1.Pod) error {
	old := map[string]bool{}
	for _, p := range pods {
		old[p.Name] = true
	}
	readyNew := func(want int) wait.ConditionWithContextFunc {
		return func(ctx context.Context) (bool, error) {
			list, err := cs.CoreV1().Pods("deployd").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=deployd"})
			if err != nil {
				return false, nil
			}
			n := 0
			for _, p := range list.Items {
				if !old[p.Name] && p.DeletionTimestamp == nil && ready(p) {
					n++
				}
			}
			return n >= want, nil
		}
	}
	for i, p := range pods {
		if err := cs.CoreV1().Pods("deployd").Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
			return err
		}
		if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, readyNew(i+1)); err != nil {
			return fmt.Errorf("waiting for %d new replicas Ready: %w", i+1, err)
		}
	}
	return nil
}

// ociSpec is what the test reads of a container's OCI runtime spec.
type ociSpec struct {
	Root    struct{ Readonly bool }
	Process struct {
		User            struct{ UID uint32 }
		NoNewPrivileges bool
		Capabilities    struct{ Bounding []string }
	}
	Mounts []struct {
		Destination string
		Options     []string
	}
}

// holder returns the name of the deployd Pod that holds the leader lease, or "".
func holder(t *testing.T, cs kubernetes.Interface) string {
	pods, err := cs.CoreV1().Pods("deployd").List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=deployd"})
	if err != nil {
		return ""
	}
	leases, err := cs.CoordinationV1().Leases("deployd").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		return ""
	}
	for _, l := range leases.Items {
		for _, p := range pods.Items {
			if l.Spec.HolderIdentity != nil && strings.Contains(*l.Spec.HolderIdentity, p.Name) {
				return p.Name
			}
		}
	}
	return ""
}

// waitFor polls cond until it holds, failing the test with what describe says if it
// does not within timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond wait.ConditionWithContextFunc, describe func() string) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, timeout, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v\n%s", what, err, describe())
	}
}

// podStates describes the Pods of a namespace, for failure messages.
func podStates(cs kubernetes.Interface, ns string) func() string {
	return func() string {
		pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return err.Error()
		}
		var out []string
		for _, p := range pods.Items {
			out = append(out, fmt.Sprintf("%s on %q: %s ready=%v %v", p.Name, p.Spec.NodeName, p.Status.Phase, ready(p), p.Status.ContainerStatuses))
		}
		return strings.Join(out, "\n")
	}
}

func ready(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// get GETs url until it answers 200 with want (a Service answers about a second after
// its endpoints are ready; a rollout changes the answer), and returns the last body.
func get(t *testing.T, url, want string, describe func() string) string {
	t.Helper()
	// A new connection each time, balanced over the Pods there are now, as a new client's.
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var body string
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		resp, err := c.Get(url)
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK && body == want, nil
	})
	if err != nil {
		t.Fatalf("GET %s: want %q, last answer %q: %v\n%s", url, want, body, err, describe())
	}
	return body
}
