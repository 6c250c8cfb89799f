package realnode

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/deployd/deployd/internal/imagebuild"
	"github.com/deployd/deployd/internal/simcluster"
)

// DeploydImage is the name deployd's image is loaded under: k8s/ says `image: deployd:dev`.
const DeploydImage = "docker.io/library/deployd:dev"

// Installation is deployd installed on the node's cluster from k8s/.
type Installation struct {
	// WebhookSecret and APIToken are the values of the Secrets Install created.
	WebhookSecret, APIToken string
	// URL reaches deployd's Service (port 80) from the host, through kube-proxy.
	URL string
}

// LoadDeployd builds deployd's image from the repository at repo as its Dockerfile says
// (imagebuild, no Docker) and loads it as DeploydImage.
func (n *Node) LoadDeployd(ctx context.Context, repo string, output io.Writer) error {
	img, err := imagebuild.Deployd(ctx, repo, imagebuild.BuildOptions{Output: output})
	if err != nil {
		return err
	}
	return n.LoadImage(ctx, img, DeploydImage)
}

// Install installs deployd the way README.md's "Install on a cluster" tells users, with
// the repository at repo as the working directory: `kubectl apply --server-side -f k8s/`,
// `kubectl create secret` of the webhook secret and API token, and the deployd-repos
// ConfigMap edited to hold reposYAML (applied by the same field manager, as an edit), or
// left as k8s/ has it when reposYAML is empty. Load the image first (LoadDeployd); Install
// does not wait for the Pods (WaitDeployd).
func (n *Node) Install(ctx context.Context, repo, reposYAML string) (*Installation, error) {
	in := &Installation{WebhookSecret: randomHex(20), APIToken: randomHex(20)}
	indented := "    " + strings.ReplaceAll(strings.TrimRight(reposYAML, "\n"), "\n", "\n    ") + "\n"
	steps := []struct {
		stdin string
		args  []string
	}{
		{"", []string{"apply", "--server-side", "-f", "k8s/"}},
		{"", []string{"-n", "deployd", "create", "secret", "generic", "deployd-webhook", "--from-literal=secret=" + in.WebhookSecret}},
		{"", []string{"-n", "deployd", "create", "secret", "generic", "deployd-api-token", "--from-literal=token=" + in.APIToken}},
		{"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deployd-repos, namespace: deployd}\ndata:\n  repos.yaml: |\n" + indented,
			[]string{"apply", "--server-side", "-f", "-"}},
	}
	if reposYAML == "" {
		steps = steps[:3]
	}
	for _, s := range steps {
		if err := n.Kubectl(ctx, repo, s.stdin, s.args...); err != nil {
			return nil, err
		}
	}
	cs, err := kubernetes.NewForConfig(n.Cluster.Config)
	if err != nil {
		return nil, err
	}
	svc, err := cs.CoreV1().Services("deployd").Get(ctx, "deployd", metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("installing deployd: its Service: %w", err)
	}
	in.URL = "http://" + svc.Spec.ClusterIP
	return in, nil
}

// WaitDeployd waits until deployd's Deployment has its two replicas Available (their
// readiness probes passed) and its Service is reachable from the host (WaitService).
func (n *Node) WaitDeployd(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(n.Cluster.Config)
	if err != nil {
		return err
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments("deployd").Get(ctx, "deployd", metav1.GetOptions{})
		return err == nil && d.Status.ObservedGeneration == d.Generation && d.Status.AvailableReplicas == *d.Spec.Replicas &&
			d.Status.UpdatedReplicas == *d.Spec.Replicas, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for deployd's replicas to be Available (kubectl -n deployd describe pods says why): %w", err)
	}
	return n.WaitService(ctx, "deployd", "deployd")
}

// Kubectl runs the cluster's kubectl in dir with the admin kubeconfig.
func (n *Node) Kubectl(ctx context.Context, dir, stdin string, args ...string) error {
	bin, err := simcluster.Binaries(ctx, io.Discard)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "kubectl"), append([]string{"--kubeconfig", n.Cluster.Kubeconfig}, args...)...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// WaitService waits until kube-proxy has programmed the Service ns/name, so the host may
// connect to its ClusterIP. A connection tried before would leave by the default route,
// and conntrack would remember it without NAT: retries from the same source port then
// stay lost after the rules exist. Entries such an early try left are deleted too.
func (n *Node) WaitService(ctx context.Context, ns, name string) error {
	cs, err := kubernetes.NewForConfig(n.Cluster.Config)
	if err != nil {
		return err
	}
	comment := `"` + ns + "/" + name
	var ip string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		svc, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		ip = svc.Spec.ClusterIP
		nat, _ := execCommand("iptables-save", "-t", "nat")
		filter, _ := execCommand("iptables-save", "-t", "filter")
		// With endpoints the ClusterIP is DNATed (nat), without them it is rejected (filter).
		return strings.Contains(nat, comment) && strings.Contains(nat, "-d "+ip+"/32") ||
			strings.Contains(filter, comment) && strings.Contains(filter, "-d "+ip+"/32"), nil
	})
	if err != nil {
		return fmt.Errorf("waiting for kube-proxy to program Service %s/%s (kube-proxy.log says why): %w", ns, name, err)
	}
	_, _ = execCommand("conntrack", "-D", "-d", ip) // exits 1 when there is none
	return nil
}
