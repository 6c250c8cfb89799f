package install

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/deployd/deployd/internal/realnode"
	"github.com/deployd/deployd/pkg/client"
)

// TestQuietFirstStart installs k8s/ as it is, whose sample repos are on GitHub, on a
// cluster without internet access: each repo's unreachable host is one warning, the
// retries are quiet, and the status API says why per repo.
func TestQuietFirstStart(t *testing.T) {
	realnode.Need(t)
	ctx := t.Context()
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	opts := realnode.DefaultOptions()
	opts.Progress = os.Stderr
	n := realnode.StartForTest(t, opts)
	cs := kubernetes.NewForConfigOrDie(n.Cluster.Config)
	if err := n.LoadDeployd(ctx, root, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Install(ctx, root, ""); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitDeployd(ctx); err != nil {
		t.Fatalf("%v\n%s", err, podStates(cs, "deployd")())
	}
	// The leader checks, and its API says why a check failed (a follower's does not yet:
	// it serves what the leader stored, and check errors are not stored).
	leader := ""
	waitFor(t, time.Minute, "a leader", func(ctx context.Context) (bool, error) {
		leader = holder(t, cs)
		return leader != "", nil
	}, podStates(cs, "deployd"))
	pod, err := cs.CoreV1().Pods("deployd").Get(ctx, leader, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	api, err := client.NewClientWithResponses("http://" + pod.Status.PodIP + ":8080")
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	waitFor(t, time.Minute, "both sample repos' check errors in the leader's status API", func(ctx context.Context) (bool, error) {
		for _, repo := range []string{"an-application", "an-other-application"} {
			res, err := api.GetDeploymentWithResponse(ctx, "haraldsk", repo, &client.GetDeploymentParams{})
			if err != nil || res.JSON200 == nil {
				return false, nil
			}
			for _, e := range res.JSON200.Environments {
				if e.CheckError != nil && *e.CheckError != "" {
					reasons[repo] = *e.CheckError
				}
			}
		}
		return len(reasons) == 2, nil
	}, podStates(cs, "deployd"))
	for repo, reason := range reasons {
		if !strings.Contains(reason, "github.com") {
			t.Errorf("%s: check error %q does not name the host", repo, reason)
		}
	}
	// Retried with backoff (1 s, 2 s, 4 s...): three failures of each repo at least.
	waitFor(t, time.Minute, "the leader's third failed check of each repo", func(ctx context.Context) (bool, error) {
		return checkErrors(ctx, cs, leader) >= 6, nil
	}, podStates(cs, "deployd"))

	var loud []string
	pods, err := cs.CoreV1().Pods("deployd").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=deployd"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		log, err := cs.CoreV1().Pods("deployd").GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(log))
		for sc.Scan() {
			var line struct{ Level, Msg, Repo string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Level != "INFO" && line.Level != "DEBUG" {
				loud = append(loud, line.Level+" "+line.Repo+" "+line.Msg)
			}
		}
	}
	t.Logf("%d failed checks on the leader; warnings and errors of both replicas: %q", checkErrors(ctx, cs, leader), loud)
	// One warning per sample repo, from the leader; and each replica's one line at start
	// that GitHub reporting is off (k8s/ names the token file of an optional Secret).
	const warn = "WARN %s repo check failed: its git host cannot be reached; retrying with backoff, quietly until it succeeds (the status API's checkError says why)"
	want := map[string]int{"WARN  GitHub reporting is off: the token file cannot be read (restart deployd once it exists)": len(pods.Items)}
	for _, r := range []string{"haraldsk/an-application", "haraldsk/an-other-application"} {
		want[strings.Replace(warn, "%s", r, 1)] = 1
	}
	got := map[string]int{}
	for _, l := range loud {
		got[l]++
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("warnings and errors logged (-want +got):\n%s", diff)
	}
}

var checkErrorsMetric = regexp.MustCompile(`(?m)^deployd_git_check_errors_total (\S+)$`)

// checkErrors reads deployd_git_check_errors_total from a deployd Pod's /metrics.
func checkErrors(ctx context.Context, cs kubernetes.Interface, pod string) int {
	p, err := cs.CoreV1().Pods("deployd").Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return 0
	}
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.Status.PodIP + ":8080/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	m := checkErrorsMetric.FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return int(v)
}
