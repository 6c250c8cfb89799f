// Command kind creates a kind cluster with deployd in it (make kind-up) or removes it
// (make kind-down), with sigs.k8s.io/kind's Go API. It needs Docker.
//
//	go run . up   [--name deployd] [--image deployd:dev]
//	go run . down [--name deployd]
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"sigs.k8s.io/kind/pkg/cluster"
	"sigs.k8s.io/kind/pkg/cluster/nodeutils"
	"sigs.k8s.io/kind/pkg/cmd"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kind:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	if len(args) == 0 || (args[0] != "up" && args[0] != "down") {
		return errors.New("usage: kind up|down [--name deployd] [--image deployd:dev] [--repo ../..]")
	}
	fs := flag.NewFlagSet("kind "+args[0], flag.ContinueOnError)
	name := fs.String("name", "deployd", "kind cluster name")
	image := fs.String("image", "deployd:dev", "image to build and load")
	repo := fs.String("repo", "../..", "deployd's checkout (for the Dockerfile and k8s/)")
	nodePort := fs.Int("host-port", 18080, "host port mapped to deployd's NodePort")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	provider := cluster.NewProvider(cluster.ProviderWithLogger(cmd.NewLogger()))
	if args[0] == "down" {
		fmt.Fprintf(out, "deleting kind cluster %s\n", *name)
		return provider.Delete(*name, "")
	}
	return up(provider, *name, *image, *repo, *nodePort, out)
}

func up(provider *cluster.Provider, name, image, repo string, hostPort int, out io.Writer) error {
	if _, err := exec.LookPath("docker"); err != nil {
		return errors.New("docker is needed for kind; without Docker, use make demo")
	}
	fmt.Fprintf(out, "building %s\n", image)
	if err := sh(repo, "docker", "build", "-t", image, "."); err != nil {
		return err
	}
	fmt.Fprintf(out, "creating kind cluster %s (a minute or two)\n", name)
	if err := provider.Create(name, cluster.CreateWithRawConfig([]byte(clusterConfig(hostPort))), cluster.CreateWithWaitForReady(3*time.Minute)); err != nil {
		return fmt.Errorf("creating the cluster: %w", err)
	}
	fmt.Fprintf(out, "loading %s into the cluster\n", image)
	var archive bytes.Buffer
	save := exec.Command("docker", "save", image)
	save.Stdout, save.Stderr = &archive, os.Stderr
	if err := save.Run(); err != nil {
		return fmt.Errorf("docker save: %w", err)
	}
	nodes, err := provider.ListInternalNodes(name)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if err := nodeutils.LoadImageArchive(n, bytes.NewReader(archive.Bytes())); err != nil {
			return fmt.Errorf("loading the image into %s: %w", n, err)
		}
	}
	fmt.Fprintln(out, "applying k8s/")
	if err := sh(repo, "kubectl", "--context", "kind-"+name, "apply", "--server-side", "-f", "k8s/"); err != nil {
		return err
	}
	if err := sh(repo, "kubectl", "--context", "kind-"+name, "-n", "deployd", "patch", "service", "deployd", "--type", "merge",
		"-p", fmt.Sprintf(`{"spec":{"type":"NodePort","ports":[{"name":"http","port":80,"targetPort":"http","nodePort":%d}]}}`, nodePortInCluster)); err != nil {
		return err
	}
	fmt.Fprintf(out, `
deployd is installed in kind cluster %[1]s (context kind-%[1]s).

  kubectl --context kind-%[1]s -n deployd rollout status deploy/deployd
  curl http://localhost:%[2]d/deployments                # NodePort %[3]d, mapped to the host
  kubectl --context kind-%[1]s -n deployd port-forward svc/deployd 8080:80   # or this

Edit the repos: kubectl --context kind-%[1]s -n deployd edit configmap deployd-repos
Remove it all:  make kind-down
`, name, hostPort, nodePortInCluster)
	return nil
}

// nodePortInCluster is the NodePort deployd's Service gets in kind.
const nodePortInCluster = 30080

// clusterConfig is the kind cluster: one node, deployd's NodePort mapped to the host.
func clusterConfig(hostPort int) string {
	return fmt.Sprintf(`kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    extraPortMappings:
      - containerPort: %d
        hostPort: %d
        listenAddress: 127.0.0.1
`, nodePortInCluster, hostPort)
}

func sh(dir, name string, args ...string) error {
	c := exec.Command(name, args...)
	c.Dir = dir
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s %v: %w", name, args, err)
	}
	return nil
}
