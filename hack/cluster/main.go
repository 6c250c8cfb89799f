// Command cluster starts deployd's simulated Kubernetes cluster by hand (make cluster),
// or around another command that shares it (make test):
//
//	go run ./hack/cluster run            # start, print the kubeconfig, wait for Ctrl-C
//	go run ./hack/cluster run --real-node  # the same with a real node beside the simulated one (root, Linux)
//	go run ./hack/cluster exec -- CMD…   # start, run CMD with DEPLOYD_TEST_KUBECONFIG and KUBECONFIG set, stop
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/deployd/deployd/internal/realnode"
	"github.com/deployd/deployd/internal/simcluster"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 || (args[0] != "run" && args[0] != "exec") {
		return errors.New("usage: cluster run [--real-node] | cluster exec -- COMMAND [ARGS…]")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if args[0] == "run" && len(args) > 1 && args[1] == "--real-node" {
		return runRealNode(ctx)
	}
	opts := simcluster.DefaultOptions()
	opts.Progress = os.Stderr
	c, err := simcluster.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "cluster: stopping")
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "cluster: stopping:", err)
		}
	}()
	if args[0] == "run" {
		fmt.Printf("Cluster ready. Use it with:\n\n  export KUBECONFIG=%s\n  kubectl get nodes   (kubectl is %s/kubectl)\n\nCtrl-C stops it.\n",
			c.Kubeconfig, binDir())
		<-ctx.Done()
		return nil
	}
	cmdArgs := args[1:]
	if len(cmdArgs) > 0 && cmdArgs[0] == "--" {
		cmdArgs = cmdArgs[1:]
	}
	if len(cmdArgs) == 0 {
		return errors.New("exec needs a command")
	}
	cmd := exec.Command(cmdArgs[0], cmdArgs[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), simcluster.KubeconfigEnv+"="+c.Kubeconfig, "KUBECONFIG="+c.Kubeconfig)
	// The command gets Ctrl-C from the terminal itself; this process only waits for it.
	return cmd.Run()
}

// runRealNode starts a cluster with a real node and waits for Ctrl-C.
func runRealNode(ctx context.Context) error {
	opts := realnode.DefaultOptions()
	opts.Progress = os.Stderr
	n, err := realnode.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "cluster: stopping the real node and the cluster, restoring the machine")
		if err := n.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "cluster: stopping:", err)
		}
	}()
	fmt.Printf("Cluster with a real node ready. Use it with:\n\n  export KUBECONFIG=%s\n  kubectl get nodes   (kubectl is %s/kubectl)\n\n"+
		"Pods run for real on %s (the simulated node is tainted %s). Load an image with\n  %s/ctr --address %s/containerd/containerd.sock -n k8s.io images import IMAGE.tar\n\nCtrl-C stops it.\n",
		n.Cluster.Kubeconfig, binDir(), realnode.NodeName, realnode.SimulatedTaint, realnodeBinDir(), n.Dir)
	<-ctx.Done()
	return nil
}

func realnodeBinDir() string {
	dir, err := realnode.Binaries(context.Background(), os.Stderr)
	if err != nil {
		return "(unknown)"
	}
	return dir
}

func binDir() string {
	dir, err := simcluster.Binaries(context.Background(), os.Stderr)
	if err != nil {
		return "(unknown)"
	}
	return dir
}
