package realnode

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// MachineState is what a real node may change on the machine, as seen at one moment:
// two observations, before Start and after Stop, are equal when teardown is complete.
type MachineState struct {
	// Rules are the lines of iptables-save and ip6tables-save, without counters.
	Rules []string
	// Tables are the nftables tables ("ip nat").
	Tables []string
	// Addresses are the interfaces' addresses ("lo 127.0.0.1/8").
	Addresses []string
	// Mounts are the mount points with their filesystem type.
	Mounts []string
	// Sysctls are the values of the settings the node's parts may change.
	Sysctls map[string]string
	// Paths say which of the host paths the node's parts create exist, and the cgroups.
	Paths map[string]bool
	// Processes are those in the node's cgroups or run from binDir ("pid name").
	Processes []string
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// Observe records the machine's state; binDir is the node's binaries' directory
// (processes run from it count as the node's).
func Observe(binDir string) MachineState {
	s := MachineState{Sysctls: readSysctls(), Paths: map[string]bool{}, Tables: nftTables()}
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		out, _ := execCommand(cmd)
		for _, line := range strings.Split(out, "\n") {
			if line != "" && !strings.HasPrefix(line, "#") {
				s.Rules = append(s.Rules, cmd+": "+counters.ReplaceAllString(line, ""))
			}
		}
	}
	ifaces, _ := net.Interfaces()
	for _, i := range ifaces {
		addrs, _ := i.Addrs()
		s.Addresses = append(s.Addresses, i.Name)
		for _, a := range addrs {
			s.Addresses = append(s.Addresses, i.Name+" "+a.String())
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if pre, post, ok := strings.Cut(line, " - "); ok {
				f, g := strings.Fields(pre), strings.Fields(post)
				if len(f) > 4 && len(g) > 0 {
					s.Mounts = append(s.Mounts, unescapeMount(f[4])+" "+g[0])
				}
			}
		}
	}
	sort.Strings(s.Mounts)
	for _, p := range hostPaths {
		_, err := os.Lstat(p)
		s.Paths[p] = err == nil
	}
	for _, h := range cgroupHierarchies() {
		_, err := os.Stat(filepath.Join(h, cgroupRoot))
		s.Paths[filepath.Join(h, cgroupRoot)] = err == nil
	}
	for _, pid := range nodeProcesses("") {
		s.Processes = append(s.Processes, describe(pid))
	}
	if binDir != "" {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || !alive(pid) {
				continue
			}
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && strings.HasPrefix(exe, binDir+"/") {
				s.Processes = append(s.Processes, describe(pid))
			}
		}
	}
	return s
}

func describe(pid int) string {
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return fmt.Sprintf("%d %s", pid, strings.TrimSpace(string(comm)))
}
