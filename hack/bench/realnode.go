package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/realnode"
	"github.com/deployd/deployd/internal/webhook"
)

// realApp is a 2-replica Deployment of the sample app answering message, whose
// readiness probe decides the rollout, with a Service in front.
func realApp(message string) map[string]string {
	return map[string]string{"deploy/manifests/app.yaml": realnode.SampleAppManifests(message)}
}

// realNode is scenario 9: deployd as users run it, its image in Pods on the real node,
// installed from k8s/; an app whose real containers serve HTTP.
func realNode(ctx context.Context, o options, r *results) (err error) {
	root, err := os.Getwd() // make bench runs in the repository's root
	if err != nil {
		return err
	}
	opts := realnode.DefaultOptions()
	opts.Progress, opts.KeepDir = os.Stderr, o.keep
	began := time.Now()
	n, err := realnode.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		if stopErr := n.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	r.add(9, "start from nothing: control plane and real node Ready", single(time.Since(began)), "", nil)

	built := time.Now()
	if err := n.LoadDeployd(ctx, root, nil); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "deployd-bench-real-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sample, err := realnode.SampleApp(ctx, dir)
	if err != nil {
		return err
	}
	if err := n.LoadImage(ctx, sample, realnode.SampleAppImage); err != nil {
		return err
	}
	r.add(9, "deployd's image built from the Dockerfile (imagebuild) and the sample app's, loaded", single(time.Since(built)), "", nil)

	tb := &gittest.Standalone{Dir: dir}
	defer tb.Close()
	git := gittest.NewServerOn(tb, realnode.Address)
	repo := git.NewRepo(tb, "bench/real")
	repo.Commit("main", "v0", realApp("v0"))
	applied := time.Now()
	in, err := n.Install(ctx, root, "repos:\n  - {name: bench/real, url: '"+git.RepoURL("bench/real")+"', namespace: an-application, environment: dev, interval: 0}\n")
	if err != nil {
		return err
	}
	if err := n.WaitDeployd(ctx); err != nil {
		return err
	}
	r.add(9, "kubectl apply -f k8s/ → deployd's 2 replicas Ready (real probes)", single(time.Since(applied)), "", nil)
	cs, err := kubernetes.NewForConfig(n.Cluster.Config)
	if err != nil {
		return err
	}
	appURL, err := serviceURL(ctx, cs, "an-application", "web") // no DNS on the host: the ClusterIP
	if err != nil {
		return err
	}
	if err := n.WaitService(ctx, "an-application", "web"); err != nil {
		return err
	}
	if err := answers(ctx, appURL, "v0\n", 3*time.Minute); err != nil {
		return fmt.Errorf("the first deployment: %w", err)
	}

	runs := min(o.runs, 5)
	var took []time.Duration
	for i := 1; i <= runs; i++ {
		msg := fmt.Sprintf("v%d", i)
		repo.Commit("main", msg, realApp(msg))
		pushed := time.Now()
		if err := pushHook(ctx, in, "bench/real"); err != nil {
			return err
		}
		if err := answers(ctx, appURL, msg+"\n", 2*time.Minute); err != nil {
			return fmt.Errorf("push %d: %w", i, err)
		}
		took = append(took, time.Since(pushed))
	}
	r.add(9, "push → the app's Service answers the new version (2 real Pods, readiness probe every 1 s)", series(took), "", nil)

	progress("real node: 30 s at rest before reading deployd's memory")
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
	}
	mb, err := podMemory(ctx, cs, "deployd")
	if err != nil {
		return err
	}
	r.add(9, "deployd's Pod at rest, working set (the larger of the 2 replicas; kubelet's summary)", figure{Value: mb, Unit: "MB"}, "", nil)
	return nil
}

// serviceURL waits for deployd to create the Service and returns its ClusterIP's URL.
func serviceURL(ctx context.Context, cs kubernetes.Interface, ns, name string) (string, error) {
	var url string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		svc, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		url = "http://" + svc.Spec.ClusterIP
		return true, nil
	})
	if err != nil {
		return "", fmt.Errorf("waiting for deployd to create the app's Service %s/%s: %w", ns, name, err)
	}
	return url, nil
}

// answers waits until url answers 200 with want.
func answers(ctx context.Context, url, want string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// A new connection each time, balanced over the Pods there are now, as a new client's.
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		if resp, err := c.Get(url); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if last = string(b); resp.StatusCode == http.StatusOK && last == want {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("GET %s: want %q, last answer %q: %w", url, want, last, ctx.Err())
		case <-tick.C:
		}
	}
}

// pushHook sends deployd's Service a signed push webhook for repo.
func pushHook(ctx context.Context, in *realnode.Installation, repo string) error {
	body := []byte(`{"ref":"refs/heads/main","repository":{"full_name":"` + repo + `"}}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.URL+"/webhooks/github", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", webhook.Signature([]byte(in.WebhookSecret), body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %d: %s", resp.StatusCode, b)
	}
	progress("real node: webhook answered %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	return nil
}

// podMemory returns the largest working set (MB) of a namespace's Pods, as the
// kubelet's summary API (what `kubectl top` reads) reports it.
func podMemory(ctx context.Context, cs kubernetes.Interface, ns string) (float64, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", realnode.NodeName, "proxy", "stats", "summary").DoRaw(ctx)
	if err != nil {
		return 0, fmt.Errorf("the kubelet's stats summary: %w", err)
	}
	var summary struct {
		Pods []struct {
			PodRef struct{ Namespace string } `json:"podRef"`
			Memory struct {
				WorkingSetBytes uint64 `json:"workingSetBytes"`
			} `json:"memory"`
		} `json:"pods"`
	}
	if err := json.Unmarshal(raw, &summary); err != nil {
		return 0, fmt.Errorf("the kubelet's stats summary: %w", err)
	}
	var largest uint64
	found := false
	for _, p := range summary.Pods {
		if p.PodRef.Namespace == ns {
			found = true
			largest = max(largest, p.Memory.WorkingSetBytes)
		}
	}
	if !found {
		return 0, fmt.Errorf("the kubelet's stats summary has no Pod in namespace %s", ns)
	}
	return float64(largest) / (1 << 20), nil
}
