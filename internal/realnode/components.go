package realnode

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	"github.com/deployd/deployd/internal/simcluster"
)

// containerdConfig is containerd's configuration (version 3). restrict_oom_score_adj is
// needed where root lacks CAP_SYS_RESOURCE (else every sandbox fails with "can't get
// final child's PID from pipe"); netns mounts stay under the state directory so teardown
// finds them; NRI is off.
const containerdConfig = `version = 3
root = '{{dir}}/containerd/root'
state = '{{dir}}/containerd/state'

[grpc]
  address = '{{dir}}/containerd/containerd.sock'

[ttrpc]
  address = '{{dir}}/containerd/containerd.sock.ttrpc'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{{sandbox}}'

  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    enable_cdi = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '/usr/sbin/runc'
          SystemdCgroup = false
          Root = '{{dir}}/runc'
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['/usr/lib/cni']
      conf_dir = '{{dir}}/cni/net.d'

  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'

  [plugins.'io.containerd.nri.v1.nri']
    disable = true
`

// cniConfig is the bridge network Pods join: masqueraded, with host ports.
const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "{{network}}",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "{{bridge}}",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "{{podRange}}"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "{{dir}}/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

// kubeletConfig keeps the kubelet to its work directory and off the host's settings:
// cgroup v1 allowed, no swap check, image GC and eviction practically off, webhook
// authentication with the API server's client CA so logs, exec and port-forward work,
// and a sync every 5 s (not 1 min) so an edited ConfigMap or Secret reaches Pods' files
// within seconds.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{{cgroupRoot}}
containerRuntimeEndpoint: unix://{{dir}}/containerd/containerd.sock
failSwapOn: false
address: {{address}}
port: {{kubeletPort}}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {{healthzPort}}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {{clientCA}}
authorization:
  mode: Webhook
podLogsDir: {{dir}}/pod-logs
volumePluginDir: {{dir}}/volume-plugins
evictionHard:
  memory.available: 1Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
resolvConf: /etc/resolv.conf
protectKernelDefaults: false
staticPodPath: ""
syncFrequency: 5s
`

// proxyConfig runs kube-proxy in iptables mode with NodePorts on the node address only,
// and leaves conntrack sysctls alone.
const proxyConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {{dir}}/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: {{node}}
bindAddress: {{address}}
healthzBindAddress: 127.0.0.1:{{proxyHealthzPort}}
metricsBindAddress: 127.0.0.1:{{proxyMetricsPort}}
clusterCIDR: {{podRange}}
nodePortAddresses: ["{{address}}/32"]
iptables:
  localhostNodePorts: false
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
`

// sysctlsKubeletWants are the host sysctls the kubelet writes at start, with the values
// it wants: it sees them already set in its own mount namespace and leaves the host's alone.
var sysctlsKubeletWants = map[string]string{
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"vm/overcommit_memory":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

func (n *Node) expand(tmpl string, extra ...string) string {
	r := strings.NewReplacer(append([]string{
		"{{dir}}", n.Dir, "{{sandbox}}", SandboxImage, "{{network}}", networkName, "{{bridge}}", bridgeName,
		"{{podRange}}", PodRange, "{{address}}", Address, "{{node}}", NodeName, "{{cgroupRoot}}", cgroupRoot,
	}, extra...)...)
	return r.Replace(tmpl)
}

func (n *Node) writeFile(name, content string) (string, error) {
	path := n.path(name)
	if err := os.MkdirAll(n.path(), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return path, nil
}

func (n *Node) containerdSocket() string { return n.path("containerd", "containerd.sock") }

func (n *Node) startContainerd(ctx context.Context) error {
	for _, d := range []string{"containerd", "cni/net.d", "runc"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			return err
		}
	}
	if _, err := n.writeFile("cni/net.d/10-"+networkName+".conflist", n.expand(cniConfig)); err != nil {
		return err
	}
	cfg, err := n.writeFile("containerd.toml", n.expand(containerdConfig))
	if err != nil {
		return err
	}
	p, err := n.spawn("containerd", n.bin("containerd"), "--config", cfg, "--log-level", "warn")
	if err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := p.Exited(); err != nil {
			return false, err
		}
		if conn, err := net.Dial("unix", n.containerdSocket()); err == nil {
			conn.Close()
			return n.ctr(ctx, "version") == nil, nil
		}
		return false, nil
	})
}

// ctr runs containerd's ctr against the node's containerd in the Kubernetes namespace.
func (n *Node) ctr(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, n.bin("ctr"), append([]string{"--address", n.containerdSocket(), "--namespace", "k8s.io"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (n *Node) startKubelet(ctx context.Context) error {
	access := n.Cluster.NodeAccess
	kubeconfig := n.path("kubelet.kubeconfig")
	if err := n.writeKubeconfig(kubeconfig, access.KubeletToken); err != nil {
		return err
	}
	cfg, err := n.writeFile("kubelet.yaml", n.expand(kubeletConfig,
		"{{kubeletPort}}", freePort(), "{{healthzPort}}", freePort(), "{{clientCA}}", access.KubeletClientCA))
	if err != nil {
		return err
	}
	if err := makeCgroups(); err != nil {
		return err
	}
	root := n.path("kubelet")
	if err := n.machine.sharedMount(root); err != nil {
		return err
	}
	// The kubelet runs in a mount namespace of its own where the sysctls it would write
	// are files that already hold its values; its root directory stays a shared mount,
	// so the volumes it mounts there reach containerd and runc.
	script := "set -e; mount --make-rprivate /proc\n"
	for key, value := range sysctlsKubeletWants {
		if _, err := os.Stat("/proc/sys/" + key); err != nil {
			continue
		}
		f, err := n.writeFile("sysctl-"+strings.ReplaceAll(key, "/", "."), value+"\n")
		if err != nil {
			return err
		}
		script += fmt.Sprintf("mount --bind %s /proc/sys/%s\n", f, key)
	}
	script += `exec "$@"`
	_, err = n.spawn("kubelet", "unshare", "--mount", "--propagation", "unchanged", "--", "sh", "-c", script, "kubelet",
		n.bin("kubelet"), "--config", cfg, "--kubeconfig", kubeconfig, "--root-dir", root,
		"--hostname-override", NodeName, "--node-ip", Address, "--node-labels", NodeLabel+"=real", "--v", "1")
	return err
}

func (n *Node) startProxy(ctx context.Context) error {
	if err := n.writeKubeconfig(n.path("kube-proxy.kubeconfig"), n.Cluster.NodeAccess.ProxyToken); err != nil {
		return err
	}
	cfg, err := n.writeFile("kube-proxy.yaml", n.expand(proxyConfig, "{{proxyHealthzPort}}", freePort(), "{{proxyMetricsPort}}", freePort()))
	if err != nil {
		return err
	}
	_, err = n.spawn("kube-proxy", n.bin("kube-proxy"), "--config", cfg, "--v", "1")
	return err
}

func (n *Node) writeKubeconfig(path, token string) error {
	ca, err := os.ReadFile(n.Cluster.NodeAccess.CA)
	if err != nil {
		return fmt.Errorf("reading the API server's certificate: %w", err)
	}
	cfg := &rest.Config{Host: n.Cluster.Config.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: ca}}
	return simcluster.WriteKubeconfig(path, cfg, NodeName)
}

// freePort returns a port on the node address that was free a moment ago.
func freePort() string {
	l, err := net.Listen("tcp", net.JoinHostPort(Address, "0"))
	if err != nil {
		l, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(fmt.Sprintf("no free port: %v", err))
		}
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// mountShared bind-mounts dir on itself and makes it recursively shared.
func mountShared(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mounting %s: %w", dir, err)
	}
	if err := syscall.Mount("", dir, "", syscall.MS_SHARED|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("making %s a shared mount: %w", dir, err)
	}
	return nil
}
