// Package simcluster runs a real Kubernetes control plane (etcd, kube-apiserver,
// controller-manager, scheduler) with kwok's simulated node, for tests and the demo.
//
// Nothing is downloaded and no container runs: the binaries are built from Go modules
// by hack/simcluster/build.sh. Pods are scheduled onto a fake node that kwok makes
// Ready at once, so Deployments really roll out. Pods labelled with CrashLoopLabel
// never become Ready, and pods labelled with FailLabel end Failed.
package simcluster

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// CrashLoopLabel set to "true" on a pod template keeps its pods Running but never Ready
// (CrashLoopBackOff), so the rollout stalls into ProgressDeadlineExceeded.
const CrashLoopLabel = "simcluster.deployd.dev/crashloop"

// FailLabel set to "true" on a pod template makes kwok fail its pods (phase Failed).
const FailLabel = "pod-init-container-running-failed.stage.kwok.x-k8s.io"

//go:embed stages/pod-crashloop.yaml
var crashLoopStage []byte

// ReadyAfterAnnotation on a pod template delays its pods' readiness by a duration
// ("5s"), the way a readiness probe does, so a rollout takes time as a real one does.
const ReadyAfterAnnotation = "simcluster.deployd.dev/ready-after"

// ServiceRange is the cluster's Service IP range; the `kubernetes` Service is its first address.
const ServiceRange = "10.96.0.0/16"

// NodeName is the simulated node's name.
const NodeName = "kwok-node-0"

// Options configure a cluster.
type Options struct {
	// Dir holds the cluster's data, certificates and logs; a new temporary directory when empty.
	Dir string
	// KeepDir leaves Dir in place after Stop, for reading the components' logs.
	KeepDir bool
	// BinDir holds the binaries; found or built by Binaries when empty.
	BinDir string
	// Progress receives a line for each step, for people waiting on a cold start.
	Progress io.Writer
	// Address is the address the API server binds to and advertises, which the
	// `kubernetes` Service points at; 127.0.0.1 when empty. A real node's Pods cannot
	// reach loopback: package realnode puts an address on lo and passes it here.
	Address string
	// RealNode names a real node (kubelet and kube-proxy) the control plane is prepared
	// for: Node,RBAC authorization, a client certificate the API server shows kubelets,
	// and tokens for the node and its kube-proxy (Cluster.NodeAccess). Empty for none.
	RealNode string
}

// NodeAccess is what a real node's kubelet and kube-proxy join the cluster with.
type NodeAccess struct {
	// NodeName is the node the kubelet registers; its token is for that node only.
	NodeName string
	// KubeletToken authenticates as system:node:<NodeName> in group system:nodes.
	KubeletToken string
	// ProxyToken authenticates as system:kube-proxy.
	ProxyToken string
	// KubeletClientCA is the file holding the CA of the client certificate the API
	// server shows kubelets (for logs, exec and port-forward): the kubelet's x509.clientCAFile.
	KubeletClientCA string
	// CA is the file holding the API server's serving certificate, which clients trust.
	CA string
}

// DefaultOptions returns options for a throw-away cluster that reports no progress.
func DefaultOptions() Options {
	return Options{Progress: io.Discard}
}

// Cluster is a running simulated cluster.
type Cluster struct {
	// Dir holds its data, certificates and logs (etcd.log, kube-apiserver.log, ...).
	Dir string
	// Kubeconfig is the path of a kubeconfig with cluster-admin rights.
	Kubeconfig string
	// Config is the same access as a rest.Config.
	Config *rest.Config
	// NodeAccess lets a real node join; nil unless Options.RealNode was set.
	NodeAccess *NodeAccess

	opts Options
	// mu guards procs and stopping: keepKwok starts kwok again from a goroutine of its own.
	mu       sync.Mutex
	procs    []*process
	stopping bool
	etcdURL  string
	// apiArgs start kube-apiserver again after StopAPIServer: same port, etcd and certificates.
	apiArgs []string
}

// Start builds (if needed) and starts a cluster on free loopback ports, returning once
// the API server is ready and the simulated node is Ready.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.BinDir == "" {
		if opts.BinDir, err = Binaries(ctx, opts.Progress); err != nil {
			return nil, err
		}
	}
	if opts.Dir == "" {
		if opts.Dir, err = os.MkdirTemp("", "deployd-simcluster-"); err != nil {
			return nil, fmt.Errorf("creating the cluster directory: %w", err)
		}
	}
	c = &Cluster{Dir: opts.Dir, opts: opts}
	defer func() {
		if err != nil {
			err = fmt.Errorf("starting the simulated cluster (logs in %s): %w", c.Dir, err)
			if stopErr := c.stopProcesses(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
		}
	}()
	start := time.Now()
	steps := []struct {
		what string
		do   func(context.Context) error
	}{
		{"etcd", c.startEtcd},
		{"kube-apiserver", c.startAPIServer},
		{"controller-manager, scheduler and kwok", c.startControllers},
		{"the simulated node", c.addNode},
	}
	for _, s := range steps {
		fmt.Fprintf(opts.Progress, "simcluster: starting %s...\n", s.what)
		if err := s.do(ctx); err != nil {
			return c, err
		}
	}
	fmt.Fprintf(opts.Progress, "simcluster: ready in %s, kubeconfig %s\n", time.Since(start).Round(100*time.Millisecond), c.Kubeconfig)
	return c, nil
}

// Stop ends every process of the cluster and removes its directory unless KeepDir.
func (c *Cluster) Stop() error {
	err := c.stopProcesses()
	if !c.opts.KeepDir {
		err = errors.Join(err, os.RemoveAll(c.Dir))
	}
	return err
}

func (c *Cluster) path(name string) string { return filepath.Join(c.Dir, name) }

func (c *Cluster) bin(name string) string { return filepath.Join(c.opts.BinDir, name) }

func (c *Cluster) startEtcd(ctx context.Context) error {
	client, peer := freePort(), freePort()
	clientURL := "http://127.0.0.1:" + client
	p, err := c.spawn("etcd", c.bin("etcd"),
		"--data-dir", c.path("etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", "http://127.0.0.1:"+peer, "--initial-advertise-peer-urls", "http://127.0.0.1:"+peer,
		"--initial-cluster", "default=http://127.0.0.1:"+peer,
		"--unsafe-no-fsync", "--log-level", "warn")
	if err != nil {
		return err
	}
	c.etcdURL = clientURL
	return p.waitHTTP(ctx, http.DefaultClient, clientURL+"/health", "")
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	if err := writeServiceAccountKey(c.path("sa.key"), c.path("sa.pub")); err != nil {
		return err
	}
	token := randomHex(16)
	tokens := token + ",admin,admin,system:masters\n"
	addr := c.opts.Address
	if addr == "" {
		addr = "127.0.0.1"
	}
	port := freePort()
	c.apiArgs = []string{
		"--etcd-servers", c.etcdURL,
		"--bind-address", addr, "--secure-port", port, "--cert-dir", c.path("pki"),
		"--token-auth-file", c.path("tokens.csv"), "--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", c.path("sa.pub"), "--service-account-signing-key-file", c.path("sa.key"),
		"--service-cluster-ip-range", ServiceRange, "--allow-privileged",
	}
	if c.opts.Address != "" {
		// Left out, the API server advertises the host's address, loopback being refused.
		c.apiArgs = append(c.apiArgs, "--advertise-address", addr)
	}
	if c.opts.RealNode != "" {
		args, err := c.prepareNodeAccess()
		if err != nil {
			return err
		}
		c.apiArgs = append(c.apiArgs, args...)
		c.apiArgs[slices.Index(c.apiArgs, "--authorization-mode")+1] = "Node,RBAC"
		tokens += c.NodeAccess.KubeletToken + ",system:node:" + c.NodeAccess.NodeName + ",node-" + c.NodeAccess.NodeName + ",system:nodes\n" +
			c.NodeAccess.ProxyToken + ",system:kube-proxy,kube-proxy\n"
	}
	if err := os.WriteFile(c.path("tokens.csv"), []byte(tokens), 0o600); err != nil {
		return fmt.Errorf("writing tokens.csv: %w", err)
	}
	host := "https://" + net.JoinHostPort(addr, port)
	if err := c.runAPIServer(ctx, host, token); err != nil {
		return err
	}
	ca, err := os.ReadFile(filepath.Join(c.path("pki"), "apiserver.crt"))
	if err != nil {
		return fmt.Errorf("reading the API server's certificate: %w", err)
	}
	c.Config = &rest.Config{Host: host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: ca}, QPS: 200, Burst: 400}
	if c.NodeAccess != nil {
		c.NodeAccess.CA = filepath.Join(c.path("pki"), "apiserver.crt")
	}
	c.Kubeconfig = c.path("kubeconfig")
	return WriteKubeconfig(c.Kubeconfig, c.Config, "simcluster")
}

// runAPIServer spawns kube-apiserver with c.apiArgs and waits until it is ready. Its
// certificates are generated into pki/ the first time and reused after.
func (c *Cluster) runAPIServer(ctx context.Context, host, token string) error {
	p, err := c.spawn("kube-apiserver", c.bin("kube-apiserver"), c.apiArgs...)
	if err != nil {
		return err
	}
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	return p.waitHTTP(ctx, insecure, host+"/readyz", token)
}

// StopAPIServer stops kube-apiserver, as an outage of the control plane does: requests
// are refused until StartAPIServer. etcd and the other components keep running. Neither
// may run at the same time as Stop.
func (c *Cluster) StopAPIServer() error {
	p := c.proc("kube-apiserver")
	if p == nil {
		return errors.New("stopping kube-apiserver: it is not part of this cluster")
	}
	return p.stop(10 * time.Second)
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, on the same port with
// the same etcd, certificates and tokens, so Config and Kubeconfig keep working; it
// returns once the API server is ready.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	p := c.proc("kube-apiserver")
	if p == nil || c.apiArgs == nil {
		return errors.New("starting kube-apiserver: it was never started in this cluster")
	}
	select {
	case <-p.done:
	default:
		return errors.New("starting kube-apiserver: it is still running (call StopAPIServer first)")
	}
	// The old log is kept beside the new one: an outage's cause is in the earlier.
	if err := os.Rename(p.log, c.path(fmt.Sprintf("kube-apiserver.%d.log", p.cmd.Process.Pid))); err != nil {
		return fmt.Errorf("keeping the stopped kube-apiserver's log: %w", err)
	}
	if err := c.runAPIServer(ctx, c.Config.Host, c.Config.BearerToken); err != nil {
		return fmt.Errorf("restarting kube-apiserver (logs in %s): %w", c.Dir, err)
	}
	return nil
}

func (c *Cluster) startControllers(ctx context.Context) error {
	kc := c.Kubeconfig
	if _, err := c.spawn("kube-controller-manager", c.bin("kube-controller-manager"),
		"--kubeconfig", kc, "--authentication-kubeconfig", kc, "--authorization-kubeconfig", kc,
		"--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", freePort(),
		"--service-account-private-key-file", c.path("sa.key"), "--root-ca-file", filepath.Join(c.path("pki"), "apiserver.crt"),
		"--controllers", "*,-serviceaccount-token", "--concurrent-deployment-syncs", "10",
		// client-go's limits (20/s here by default) would make the cluster, not what runs
		// on it, the bottleneck of bulk rollouts in benchmarks.
		"--kube-api-qps", "300", "--kube-api-burst", "600", "--concurrent-replicaset-syncs", "10"); err != nil {
		return err
	}
	if _, err := c.spawn("kube-scheduler", c.bin("kube-scheduler"),
		"--kubeconfig", kc, "--authentication-kubeconfig", kc, "--authorization-kubeconfig", kc,
		"--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", freePort(),
		"--kube-api-qps", "300", "--kube-api-burst", "600"); err != nil {
		return err
	}
	stages, err := c.writeStages()
	if err != nil {
		return err
	}
	args := []string{"--kubeconfig", kc, "--config", stages,
		"--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--cidr=10.0.0.1/24", "--node-ip=10.0.0.1", "--server-address", "127.0.0.1:" + freePort()}
	p, err := c.spawn("kwok", c.bin("kwok"), args...)
	if err != nil {
		return err
	}
	go c.keepKwok(p, args)
	return nil
}

// maxKwokStarts bounds how often keepKwok starts kwok again in a cluster's life.
const maxKwokStarts = 5

// keepKwok starts kwok again each time it exits while the cluster runs. kwok v0.8.0 can
// die with "fatal error: concurrent map writes" when its workers first build their CEL
// environments at the same time (easycel's type registry is a map shared unguarded); it
// keeps no state of its own, so a new one picks up where it died. The dead one's log is
// kept beside the new one's, as kwok.<pid>.log.
func (c *Cluster) keepKwok(p *process, args []string) {
	for range maxKwokStarts {
		<-p.done
		kept := c.path(fmt.Sprintf("kwok.%d.log", p.cmd.Process.Pid))
		c.mu.Lock()
		stopping := c.stopping
		c.mu.Unlock()
		if stopping {
			return
		}
		if err := os.Rename(p.log, kept); err != nil {
			kept = p.log
		}
		fmt.Fprintf(c.opts.Progress, "simcluster: kwok exited (%v; its log: %s); starting it again\n", p.err, kept)
		next, err := c.spawn("kwok", c.bin("kwok"), args...)
		if err != nil {
			return // stopping, or kwok cannot start: the cluster's waits say so
		}
		p = next
	}
}

// writeStages joins the kwok stage files deployd's tests rely on: the node comes up
// and keeps its heartbeat, pods go Ready at once, and labelled pods crash-loop or fail.
func (c *Cluster) writeStages() (string, error) {
	files := []string{
		"node/fast/node-initialize.yaml", "node/heartbeat/node-heartbeat.yaml",
		"pod/fast/pod-ready.yaml", "pod/fast/pod-complete.yaml", "pod/fast/pod-delete.yaml",
		"pod/chaos/pod-init-container-running-failed.yaml",
	}
	var out []byte
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(c.opts.BinDir, "kwok-stages", f))
		if err != nil {
			return "", fmt.Errorf("reading kwok stage: %w", err)
		}
		out = append(append(out, "---\n"...), b...)
	}
	out = append(append(out, "---\n"...), crashLoopStage...)
	delayed, err := delayedReady(filepath.Join(c.opts.BinDir, "kwok-stages", "pod/fast/pod-ready.yaml"))
	if err != nil {
		return "", err
	}
	out = append(append(out, "---\n"...), delayed...)
	path := c.path("kwok-stages.yaml")
	return path, os.WriteFile(path, out, 0o644)
}

// delayedReady derives from kwok's fast pod-ready stage one that waits for the duration
// a pod's ReadyAfterAnnotation names, and is chosen over the fast one for such pods.
func delayedReady(fastReady string) ([]byte, error) {
	b, err := os.ReadFile(fastReady)
	if err != nil {
		return nil, fmt.Errorf("reading kwok stage: %w", err)
	}
	s := string(b)
	for _, r := range []struct{ old, new string }{
		{"  name: pod-ready\n", "  name: pod-ready-after\n"},
		{"    matchExpressions:\n", "    matchExpressions:\n    - key: '.metadata.annotations[\"" + ReadyAfterAnnotation + "\"]'\n      operator: 'Exists'\n"},
		{"  next:\n", "  weight: 10000\n  delay:\n    durationMilliseconds: 0\n    durationFrom:\n      expressionFrom: '.metadata.annotations[\"" + ReadyAfterAnnotation + "\"]'\n  next:\n"},
	} {
		if !strings.Contains(s, r.old) {
			return nil, fmt.Errorf("kwok's %s changed shape: no %q", fastReady, r.old)
		}
		s = strings.Replace(s, r.old, r.new, 1)
	}
	return []byte(s), nil
}

func (c *Cluster) addNode(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("2000"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        NodeName,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels:      map[string]string{"kubernetes.io/hostname": NodeName, "kubernetes.io/os": "linux", "type": "kwok"},
		},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating node %s: %w", NodeName, err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for node %s to be Ready (kwok.log says why): %w", NodeName, err)
	}
	return nil
}

// WriteKubeconfig writes a kubeconfig file for cfg's host and bearer token.
func WriteKubeconfig(path string, cfg *rest.Config, name string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData, InsecureSkipTLSVerify: cfg.Insecure}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name, Namespace: "default"}
	kc.CurrentContext = name
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}

func writeServiceAccountKey(keyPath, pubPath string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generating the service account key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("encoding the service account key: %w", err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// freePort returns a loopback port that was free a moment ago.
func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("no free loopback port: %v", err))
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
