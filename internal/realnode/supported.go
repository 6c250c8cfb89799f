package realnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// BinEnv names a directory holding the node's prebuilt binaries; build.sh fills it when set.
const BinEnv = "DEPLOYD_REALNODE_BIN"

var binaries = []string{"containerd", "containerd-shim-runc-v2", "ctr", "kubelet", "kube-proxy", "pause"}

// packaged are the files the Debian packages hack/realnode/build.sh installs provide.
var packaged = map[string]string{
	"/usr/sbin/runc":          "runc",
	"/usr/lib/cni/bridge":     "containernetworking-plugins",
	"/usr/lib/cni/host-local": "containernetworking-plugins",
	"/usr/lib/cni/loopback":   "containernetworking-plugins",
	"/usr/lib/cni/portmap":    "containernetworking-plugins",
	"iptables":                "iptables",
	"iptables-save":           "iptables",
	"conntrack":               "conntrack",
}

// Supported says why a real node cannot run here, or nil: it needs Linux, root,
// overlayfs, cgroups, unshare, mount and ip, and the Debian packages build.sh installs
// (or apt-get to install them with).
func Supported() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("a real node needs Linux, this is %s", runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		return errors.New("a real node needs root (it runs containerd and kubelet, adds iptables rules and mounts)")
	}
	var missing []string
	for _, cmd := range []string{"unshare", "mount", "ip", "flock"} {
		if _, err := exec.LookPath(cmd); err != nil {
			missing = append(missing, cmd)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("a real node needs %s (util-linux, iproute2)", strings.Join(missing, ", "))
	}
	if fs, err := os.ReadFile("/proc/filesystems"); err != nil || !bytes.Contains(fs, []byte("\toverlay\n")) {
		return errors.New("a real node needs overlayfs, which this kernel lacks (no overlay in /proc/filesystems)")
	}
	if len(cgroupHierarchies()) == 0 {
		return errors.New("a real node needs cgroups mounted under /sys/fs/cgroup")
	}
	if pkgs := missingPackages(); len(pkgs) > 0 {
		if _, err := exec.LookPath("apt-get"); err != nil {
			return fmt.Errorf("a real node needs the packages %s (and has no apt-get to install them with)", strings.Join(pkgs, ", "))
		}
	}
	return nil
}

func missingPackages() []string {
	var pkgs []string
	for file, pkg := range packaged {
		var err error
		if filepath.IsAbs(file) {
			_, err = os.Stat(file)
		} else {
			_, err = exec.LookPath(file)
		}
		if err != nil && !strings.Contains(strings.Join(pkgs, " "), pkg) {
			pkgs = append(pkgs, pkg)
		}
	}
	return pkgs
}

// Binaries returns the directory holding the node's binaries, building any that are
// missing (and installing missing Debian packages) with hack/realnode/build.sh: minutes
// on a cold machine, with its progress going to progress.
func Binaries(ctx context.Context, progress io.Writer) (string, error) {
	if dir := os.Getenv(BinEnv); dir != "" && complete(dir) && len(missingPackages()) == 0 {
		return dir, nil
	}
	script, err := findScript()
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Stdout, cmd.Stderr = &out, progress
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the real node with %s: %w", script, err)
	}
	dir := strings.TrimSpace(out.String())
	if !complete(dir) {
		return "", fmt.Errorf("%s ran but %s lacks some of %v", script, dir, binaries)
	}
	if pkgs := missingPackages(); len(pkgs) > 0 {
		return "", fmt.Errorf("%s ran but the packages %s are still missing", script, strings.Join(pkgs, ", "))
	}
	return dir, nil
}

func complete(dir string) bool {
	for _, b := range binaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return false
		}
	}
	return true
}

// findScript looks for hack/realnode/build.sh from the working directory up.
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		script := filepath.Join(dir, "hack", "realnode", "build.sh")
		if _, err := os.Stat(script); err == nil {
			return script, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("hack/realnode/build.sh not found above the working directory: run from deployd's checkout, or set " + BinEnv)
		}
		dir = parent
	}
}
