package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/realnode"
	"github.com/deployd/deployd/internal/simcluster"
)

// runReal installs deployd from k8s/ on a real node, as README.md tells users, and has it
// deploy the sample apps into real containers. Ctrl-C stops the node, which puts the
// machine back as it found it.
func runReal(ctx context.Context, work string) (err error) {
	root, err := os.Getwd() // make demo runs in the repository's root
	if err != nil {
		return err
	}
	say("starting a local control plane and a real node: containerd, runc, kubelet, kube-proxy (the first run builds them: minutes, progress below)")
	opts := realnode.DefaultOptions()
	opts.Progress = os.Stdout
	n, err := realnode.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		say("stopping the node and putting the machine back as it was")
		if stopErr := n.Stop(); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
	}()

	say("building deployd's image from the Dockerfile (no Docker) and the sample app's, and loading them into containerd")
	if err := n.LoadDeployd(ctx, root, nil); err != nil {
		return err
	}
	sample, err := realnode.SampleApp(ctx, work)
	if err != nil {
		return err
	}
	if err := n.LoadImage(ctx, sample, realnode.SampleAppImage); err != nil {
		return err
	}

	say("creating the sample app repos and serving them over smart HTTP on the node address %s", realnode.Address)
	tb := &gittest.Standalone{Dir: work}
	defer tb.Close()
	git := gittest.NewServerOn(tb, realnode.Address)
	st := state{Bare: map[string]string{}, AppURL: map[string]string{}, Kubeconfig: n.Cluster.Kubeconfig}
	for _, app := range apps {
		repo := git.NewRepo(tb, "demo/"+app)
		repo.Commit("main", "first release of "+app, sampleApp(app, "Hello from "+app+"!"))
		st.Bare[app] = repo.Bare
	}

	say("installing deployd as README.md says: kubectl apply --server-side -f k8s/, the two Secrets, the deployd-repos ConfigMap pointed at the sample repos")
	in, err := n.Install(ctx, root, reposYAML(func(app string) string { return git.RepoURL("demo/" + app) }))
	if err != nil {
		return err
	}
	st.URL, st.Secret, st.Token = in.URL, in.WebhookSecret, in.APIToken
	say("waiting for deployd's two replicas to turn Ready through their probes")
	if err := n.WaitDeployd(ctx); err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(n.Cluster.Config)
	if err != nil {
		return err
	}
	// A replica that started before the ConfigMap was edited has the old repos.yaml until
	// the kubelet refreshes its volume (within about a minute): until then it would ignore
	// the sample apps' webhooks.
	say("waiting for both replicas to serve the sample repos from the edited deployd-repos ConfigMap")
	if err := replicasServe(ctx, cs, "demo/"+apps[0]); err != nil {
		return err
	}
	const logs = "kubectl -n deployd logs -l app.kubernetes.io/name=deployd"
	if err := waitDeployed(ctx, in.URL, nil, logs); err != nil {
		return err
	}
	for _, app := range apps {
		svc, err := cs.CoreV1().Services(app).Get(ctx, app, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("the Service of %s: %w", app, err)
		}
		if err := n.WaitService(ctx, app, app); err != nil {
			return err
		}
		st.AppURL[app] = "http://" + svc.Spec.ClusterIP
		if err := answers(st.AppURL[app], "Hello from "+app+"!\n", 2*time.Minute); err != nil {
			return err
		}
	}
	if err := writeState(st); err != nil {
		return err
	}
	bin, err := simcluster.Binaries(ctx, io.Discard)
	if err != nil {
		return err
	}
	fmt.Printf(`
deployd runs in the cluster as its users run it (2 replicas from k8s/, image built from
the Dockerfile), and both sample apps are rolled out in real containers. Try:

  curl %[1]s/deployments                           # deployd's API, through its Service
  curl %[1]s/deployment/demo/an-application
  curl %[1]s/deployment/demo/an-application/history
  curl -N %[1]s/deployment/demo/an-application/events   # live; then, in another terminal:
  curl %[2]s/                                          # an-application's Pods answer through its Service
  make demo-push                                          # commits a new message, sends the signed webhook to deployd's Service, waits for the app to answer it
  curl -X POST -H "Authorization: Bearer %[3]s" "%[1]s/deployment/demo/an-application/sync?force=true"
  %[4]s --kubeconfig %[5]s get pods -A -o wide

API docs: %[1]s/docs    deployd's log: %[6]s    Ctrl-C stops everything and restores the machine.
`, st.URL, st.AppURL[apps[0]], st.Token, filepath.Join(bin, "kubectl"), st.Kubeconfig, logs)
	<-ctx.Done()
	say("stopping")
	return nil
}

// replicasServe waits until every deployd Pod lists repo in its API, asking each Pod at
// its own address.
func replicasServe(ctx context.Context, cs kubernetes.Interface, repo string) error {
	c := &http.Client{Timeout: 2 * time.Second}
	return wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods("deployd").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=deployd"})
		if err != nil || len(pods.Items) == 0 {
			return false, nil
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			resp, err := c.Get("http://" + net.JoinHostPort(p.Status.PodIP, "8080") + "/deployments")
			if err != nil {
				return false, nil
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if !strings.Contains(string(b), `"repo":"`+repo+`"`) {
				return false, nil
			}
		}
		return true, nil
	})
}
