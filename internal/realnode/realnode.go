// Package realnode adds one real Kubernetes node (containerd, runc, CNI bridge, kubelet,
// kube-proxy) beside the simulated nodes of a simcluster, so Pods run real containers.
//
// It changes the machine (an address on lo, iptables chains, a bridge, mounts, sysctls)
// and Stop puts everything back; a run killed before Stop is swept at the next Start.
package realnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/deployd/deployd/internal/simcluster"
)

const (
	// Address is the node's IP, put on lo: the API server binds to it and advertises it,
	// the kubelet and kube-proxy serve on it, and Pods reach the host through it.
	Address = "10.255.255.1"
	// NodeName is the real node's name.
	NodeName = "real-node-0"
	// NodeLabel is set to "real" on the real node, for node selectors.
	NodeLabel = "deployd.dev/node"
	// SimulatedTaint is put on the simulated node (NoSchedule) so Pods go to the real
	// node unless they tolerate it: a workload that should stay simulated (for scale)
	// tolerates it.
	SimulatedTaint = "deployd.dev/simulated"
	// PodRange is the range the CNI bridge gives Pod addresses from.
	PodRange = "10.88.0.0/16"
	// SandboxImage is the name containerd's CRI pins as the Pod sandbox image; the node
	// imports its own pause program under it, so nothing is ever pulled.
	SandboxImage = "registry.k8s.io/pause:3.10.2"
	// bridgeName is the CNI bridge on the host.
	bridgeName = "deployd0"
	// networkName is the CNI network's name (and the prefix of its files in /var/lib/cni).
	networkName = "deployd-realnode"
)

// Options configure the node and the cluster it joins.
type Options struct {
	// Cluster configures the simulated cluster started with the node. Its Address and
	// RealNode are set by Start; its Progress is Progress when nil.
	Cluster simcluster.Options
	// Dir holds the node's state, configuration and logs; a new temporary directory when empty.
	Dir string
	// KeepDir leaves Dir's logs and configuration in place after Stop.
	KeepDir bool
	// BinDir holds the node's binaries; found or built by Binaries when empty.
	BinDir string
	// Progress receives a line for each step.
	Progress io.Writer
	// KeepSimulatedSchedulable leaves the simulated node without SimulatedTaint, so Pods
	// land on either node.
	KeepSimulatedSchedulable bool
}

// DefaultOptions returns options for a throw-away node and cluster that report no progress.
func DefaultOptions() Options {
	return Options{Progress: io.Discard}
}

// Node is a running real node and the cluster it joined.
type Node struct {
	// Cluster is the control plane (and simulated node) the real node joined.
	Cluster *simcluster.Cluster
	// Dir holds the node's state and logs (containerd.log, kubelet.log, kube-proxy.log).
	Dir string

	opts    Options
	mu      sync.Mutex // Stop may be called from a signal handler and a test's cleanup
	procs   []*simcluster.Process
	machine *machine
}

// Start sweeps what a killed earlier run left, starts a simulated cluster bound to
// Address, and joins a real node to it; it returns once the node is Ready. Only one real
// node runs on a machine at a time: Start waits for another to stop.
func Start(ctx context.Context, opts Options) (n *Node, err error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.BinDir == "" {
		if opts.BinDir, err = Binaries(ctx, opts.Progress); err != nil {
			return nil, err
		}
	}
	if opts.Dir == "" {
		if opts.Dir, err = os.MkdirTemp("", "deployd-realnode-"); err != nil {
			return nil, fmt.Errorf("creating the node directory: %w", err)
		}
	}
	m, err := claimMachine(ctx, opts.Dir, opts.BinDir, opts.Progress)
	if err != nil {
		return nil, err
	}
	n = &Node{Dir: opts.Dir, opts: opts, machine: m}
	defer func() {
		if err != nil {
			err = fmt.Errorf("starting the real node (logs in %s): %w", n.Dir, err)
			if stopErr := n.stop(true); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
		}
	}()
	start := time.Now()
	steps := []struct {
		what string
		do   func(context.Context) error
	}{
		{"the node address " + Address + " on lo", func(context.Context) error { return m.addAddress() }},
		{"the simulated cluster", n.startCluster},
		{"containerd", n.startContainerd},
		{"the Pod sandbox image", n.importSandboxImage},
		{"kubelet", n.startKubelet},
		{"kube-proxy", n.startProxy},
		{"node " + NodeName + " Ready", n.waitReady},
	}
	for _, s := range steps {
		fmt.Fprintf(opts.Progress, "realnode: starting %s...\n", s.what)
		if err := s.do(ctx); err != nil {
			return n, err
		}
	}
	fmt.Fprintf(opts.Progress, "realnode: node %s Ready in %s\n", NodeName, time.Since(start).Round(100*time.Millisecond))
	return n, nil
}

// Stop ends the node's processes and containers and the cluster, and puts the machine
// back as Start found it: mounts, iptables chains, the bridge, the address on lo, sysctls.
func (n *Node) Stop() error {
	return n.stop(n.opts.KeepDir)
}

func (n *Node) stop(keepDir bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	for i := len(n.procs) - 1; i >= 0; i-- {
		errs = append(errs, n.procs[i].Stop(10*time.Second))
	}
	n.procs = nil
	if n.Cluster != nil {
		errs = append(errs, n.Cluster.Stop())
		n.Cluster = nil
	}
	errs = append(errs, n.machine.release(keepDir))
	return errors.Join(errs...)
}

// MachineBefore and MachineAfter are the machine's state as Start found it (after
// sweeping a killed run) and as Stop left it, observed while this node held the
// machine: equal when teardown is complete. MachineAfter is empty before Stop.
func (n *Node) MachineBefore() MachineState { return n.machine.before }

// MachineAfter: see MachineBefore.
func (n *Node) MachineAfter() MachineState { return n.machine.after }

// PIDs returns the process ids of the node's own processes (containerd, kubelet, kube-proxy).
func (n *Node) PIDs() []int {
	pids := make([]int, len(n.procs))
	for i, p := range n.procs {
		pids[i] = p.Pid()
	}
	return pids
}

func (n *Node) path(parts ...string) string {
	return filepath.Join(append([]string{n.Dir}, parts...)...)
}

func (n *Node) bin(name string) string { return filepath.Join(n.opts.BinDir, name) }

func (n *Node) startCluster(ctx context.Context) error {
	copts := n.opts.Cluster
	copts.Address, copts.RealNode = Address, NodeName
	if copts.Progress == nil {
		copts.Progress = n.opts.Progress
	}
	if copts.Dir == "" {
		// Inside the node's directory, removed (or kept) with it.
		copts.Dir, copts.KeepDir = n.path("cluster"), true
		if err := os.MkdirAll(copts.Dir, 0o755); err != nil {
			return err
		}
	}
	c, err := simcluster.Start(ctx, copts)
	if err != nil {
		return err
	}
	n.Cluster = c
	if n.opts.KeepSimulatedSchedulable {
		return nil
	}
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	node, err := cs.CoreV1().Nodes().Get(ctx, simcluster.NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("tainting the simulated node: %w", err)
	}
	node.Spec.Taints = append(node.Spec.Taints, corev1.Taint{Key: SimulatedTaint, Value: "true", Effect: corev1.TaintEffectNoSchedule})
	if _, err := cs.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("tainting the simulated node: %w", err)
	}
	return nil
}

// waitReady waits until the kubelet registered the node and reports it Ready.
func (n *Node) waitReady(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(n.Cluster.Config)
	if err != nil {
		return err
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, p := range n.procs {
			if err := p.Exited(); err != nil {
				return false, err
			}
		}
		node, err := cs.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for node %s to be Ready (kubelet.log says why): %w", NodeName, err)
	}
	return nil
}
