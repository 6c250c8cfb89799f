package realnode

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupRoot is the cgroup (in every hierarchy) the kubelet puts Pods under, so that
// teardown finds exactly the node's containers and no one else's.
const cgroupRoot = "deployd-realnode"

// sysctls are the host settings the node's parts may change (under /proc/sys), saved
// before and restored after. ip_forward comes first: writing it resets every
// interface's forwarding, which the later entries then restore.
var sysctls = []string{
	"net/ipv4/ip_forward",
	"net/ipv4/conf/all/forwarding", "net/ipv4/conf/default/forwarding", "net/ipv4/conf/lo/forwarding",
	"net/ipv4/conf/all/route_localnet", "net/ipv4/conf/default/route_localnet",
	"net/ipv6/conf/all/forwarding", "net/ipv6/conf/default/forwarding",
	"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables", "net/bridge/bridge-nf-call-arptables",
	"net/netfilter/nf_conntrack_max", "net/netfilter/nf_conntrack_tcp_timeout_established",
	"net/netfilter/nf_conntrack_tcp_timeout_close_wait", "net/netfilter/nf_conntrack_udp_timeout",
	"net/netfilter/nf_conntrack_udp_timeout_stream", "net/netfilter/nf_conntrack_tcp_be_liberal",
	"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// sysctlKeys are sysctls plus the forwarding setting of each interface there is now.
func sysctlKeys() []string {
	keys := slices.Clone(sysctls)
	ifaces, _ := net.Interfaces()
	for _, i := range ifaces {
		if i.Name != "lo" {
			keys = append(keys, "net/ipv4/conf/"+i.Name+"/forwarding")
		}
	}
	return keys
}

func readSysctls() map[string]string {
	out := map[string]string{}
	for _, k := range sysctlKeys() {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			out[k] = strings.TrimSpace(string(b))
		}
	}
	return out
}

// writeSysctls writes back the saved values that differ now, in sysctlKeys order.
func writeSysctls(saved map[string]string) error {
	keys := sysctlKeys()
	for k := range saved {
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	var errs []error
	for _, k := range keys {
		want, ok := saved[k]
		if !ok {
			continue
		}
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil || strings.TrimSpace(string(b)) == want {
			continue
		}
		if err := os.WriteFile("/proc/sys/"+k, []byte(want+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restoring %s to %s: %w", strings.ReplaceAll(k, "/", "."), want, err))
		}
	}
	return errors.Join(errs...)
}

// killAll SIGKILLs every node program whose arguments name a path under dir (the
// node's own processes, the cluster's, containerd's shims) and every process in the
// node's cgroup (the containers), until none is left.
func killAll(dir string) error {
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		pids := nodeProcesses(dir)
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		select {
		case <-deadline:
			return fmt.Errorf("processes %v still run after 30s of SIGKILL", pids)
		case <-tick.C:
		}
	}
}

// nodeProcesses lists the live (not zombie) processes killAll ends.
func nodeProcesses(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || !alive(pid) {
			continue
		}
		if dir != "" && runsFrom(pid, dir) || inNodeCgroup(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// nodePrograms are the programs of a node and its cluster; a process of one of them
// whose arguments name a path in the work directory is the run's (a `tail -f` of a log
// there is not).
var nodePrograms = []string{
	"containerd", "containerd-shim-runc-v2", "ctr", "runc", "kubelet", "kube-proxy", "unshare", "sh",
	"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
}

func runsFrom(pid int, dir string) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || !slices.Contains(nodePrograms, filepath.Base(strings.TrimSuffix(exe, " (deleted)"))) {
		return false
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return bytes.Contains(cmdline, []byte(dir+"/"))
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z' && b[i+2] != 'X'
	}
	return true
}

func inNodeCgroup(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && strings.HasPrefix(parts[2], "/"+cgroupRoot) {
			return true
		}
	}
	return false
}

// mountPoints returns the mount points of this mount namespace, in mount order.
func mountPoints() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	scan := bufio.NewScanner(f)
	for scan.Scan() {
		fields := strings.Fields(scan.Text())
		if len(fields) > 4 {
			out = append(out, unescapeMount(fields[4]))
		}
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder detaches every mount at or below dir, the latest first.
func unmountUnder(dir string) error {
	if dir == "" {
		return nil
	}
	for round := 0; round < 10; round++ {
		var under []string
		for _, mp := range mountPoints() {
			if mp == dir || strings.HasPrefix(mp, dir+"/") {
				under = append(under, mp)
			}
		}
		if len(under) == 0 {
			return nil
		}
		for i := len(under) - 1; i >= 0; i-- {
			_ = syscall.Unmount(under[i], syscall.MNT_DETACH)
		}
	}
	return fmt.Errorf("mounts under %s remain after 10 rounds of unmounting", dir)
}

// ours says whether an iptables chain was made by the node's parts: kube-proxy and the
// kubelet (KUBE-*), the CNI bridge and portmap plugins (CNI-*).
func ours(chain string) bool {
	return strings.HasPrefix(chain, "KUBE-") || strings.HasPrefix(chain, "CNI-")
}

// removeChains deletes, in IPv4 and IPv6 tables, the rules that jump to the node's
// chains and then the chains; and the nftables tables that appeared with them.
func removeChains(tablesBefore []string) error {
	var errs []error
	for _, cmd := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(cmd); err != nil {
			continue
		}
		for _, table := range []string{"filter", "nat", "mangle", "raw"} {
			errs = append(errs, removeTableChains(cmd, table))
		}
	}
	if _, err := exec.LookPath("nft"); err == nil {
		for _, t := range nftTables() {
			if slices.Contains(tablesBefore, t) || !removableTable(t) {
				continue
			}
			errs = append(errs, run("nft", "delete", "table", strings.Fields(t)[0], strings.Fields(t)[1]))
		}
	}
	return errors.Join(errs...)
}

func removeTableChains(cmd, table string) error {
	out, err := execCommand(cmd+"-save", "-t", table)
	if err != nil {
		return nil // the table does not exist (or this family is not supported)
	}
	var chains []string
	index := map[string]int{}  // rules seen per chain
	drop := map[string][]int{} // rule numbers to delete per chain not ours
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, ":"):
			if name := strings.Fields(line[1:])[0]; ours(name) {
				chains = append(chains, name)
			}
		case strings.HasPrefix(line, "-A "):
			f := strings.Fields(line)
			chain := f[1]
			index[chain]++
			if ours(chain) {
				continue
			}
			for i := 2; i+1 < len(f); i++ {
				if (f[i] == "-j" || f[i] == "-g") && ours(f[i+1]) {
					drop[chain] = append(drop[chain], index[chain])
					break
				}
			}
		}
	}
	var errs []error
	for chain, nums := range drop {
		for i := len(nums) - 1; i >= 0; i-- {
			errs = append(errs, run(cmd, "-w", "-t", table, "-D", chain, strconv.Itoa(nums[i])))
		}
	}
	for _, c := range chains {
		errs = append(errs, run(cmd, "-w", "-t", table, "-F", c))
	}
	for _, c := range chains {
		errs = append(errs, run(cmd, "-w", "-t", table, "-X", c))
	}
	return errors.Join(errs...)
}

// nftTables lists the nftables tables as "family name", or nil without nft.
func nftTables() []string {
	if _, err := exec.LookPath("nft"); err != nil {
		return nil
	}
	out, err := execCommand("nft", "list", "tables")
	if err != nil {
		return nil
	}
	var tables []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "table" {
			tables = append(tables, f[1]+" "+f[2])
		}
	}
	return tables
}

// removableTable says whether a table that appeared during the run may go: kube-proxy's
// own, or one iptables-nft made that holds no rule now.
func removableTable(t string) bool {
	family, name, _ := strings.Cut(t, " ")
	if name == "kube-proxy" {
		return true
	}
	if (family != "ip" && family != "ip6") || !slices.Contains([]string{"filter", "nat", "mangle", "raw"}, name) {
		return false
	}
	cmd := map[string]string{"ip": "iptables-save", "ip6": "ip6tables-save"}[family]
	out, err := execCommand(cmd, "-t", name)
	return err == nil && !strings.Contains(out, "\n-A ")
}

// removeBridge deletes the CNI bridge and any interface still attached to it.
func removeBridge() error {
	if _, err := net.InterfaceByName(bridgeName); err != nil {
		return nil
	}
	out, _ := execCommand("ip", "-o", "link", "show", "master", bridgeName)
	var errs []error
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			errs = append(errs, run("ip", "link", "del", name))
		}
	}
	return errors.Join(append(errs, run("ip", "link", "del", bridgeName))...)
}

func hasAddress() bool {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.String() == Address {
			return true
		}
	}
	return false
}

// cgroupHierarchies lists the directories cgroup hierarchies are mounted at.
func cgroupHierarchies() []string {
	var out []string
	for _, mp := range mountPoints() {
		if strings.HasPrefix(mp, "/sys/fs/cgroup") {
			var st syscall.Statfs_t
			// CGROUP_SUPER_MAGIC and CGROUP2_SUPER_MAGIC.
			if syscall.Statfs(mp, &st) == nil && (st.Type == 0x27e0eb || st.Type == 0x63677270) {
				out = append(out, mp)
			}
		}
	}
	return out
}

// makeCgroups creates cgroupRoot in every hierarchy, with cpuset's CPUs and memory
// nodes copied from the root (cgroup v1 leaves them empty).
func makeCgroups() error {
	for _, h := range cgroupHierarchies() {
		dir := filepath.Join(h, cgroupRoot)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return fmt.Errorf("setting %s: %w", filepath.Join(dir, f), err)
				}
			}
		}
	}
	return nil
}

// removeCgroups removes cgroupRoot and everything below it, in every hierarchy.
func removeCgroups() error {
	var errs []error
	for _, h := range cgroupHierarchies() {
		root := filepath.Join(h, cgroupRoot)
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func execCommand(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
