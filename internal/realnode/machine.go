package realnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// stateDir holds the lock that lets one real node run at a time, and the record of what
// the running one changed, which the next Start reads if that run was killed.
const stateDir = "/run/deployd-realnode"

// hostPaths are the paths outside the work directory that the node's parts create.
var hostPaths = []string{
	"/run/containerd", "/var/lib/cni", "/var/lib/kubelet", "/var/log/containers", "/var/log/pods",
	"/var/run/kubernetes", "/etc/cni", "/opt/cni",
}

// record is what a run changed on the machine, kept in stateDir while it runs.
type record struct {
	// Dir is the run's work directory.
	Dir string `json:"dir"`
	// PID is the process that started the run.
	PID int `json:"pid"`
	// Sysctls are the values (under /proc/sys) before the run.
	Sysctls map[string]string `json:"sysctls"`
	// Existed says which of hostPaths existed before the run.
	Existed map[string]bool `json:"existed"`
	// Tables are the nftables tables ("ip nat") that existed before the run.
	Tables []string `json:"tables"`
	// AddedAddress says the run put Address on lo.
	AddedAddress bool `json:"addedAddress"`
}

// machine is this process's claim on the machine for one real node.
type machine struct {
	lock   *os.File
	rec    record
	binDir string
	// before and after are the machine's state when claimed (after the sweep) and
	// when released (after the restore), both observed under the lock.
	before, after MachineState
}

// claimMachine takes the machine-wide lock (waiting for another node to stop), sweeps
// what a killed earlier run left, and records the machine's state for the restore.
func claimMachine(ctx context.Context, dir, binDir string, progress io.Writer) (*machine, error) {
	lock, err := lockStateDir(ctx)
	if err != nil {
		return nil, err
	}
	m := &machine{lock: lock, binDir: binDir}
	if err := sweepLeftover(progress); err != nil {
		lock.Close()
		return nil, err
	}
	if err := otherKubernetes(); err != nil {
		lock.Close()
		return nil, err
	}
	m.rec = record{Dir: dir, PID: os.Getpid(), Sysctls: readSysctls(), Existed: map[string]bool{}, Tables: nftTables()}
	for _, p := range hostPaths {
		_, err := os.Lstat(p)
		m.rec.Existed[p] = err == nil
	}
	if err := m.save(); err != nil {
		lock.Close()
		return nil, err
	}
	m.before = Observe(binDir)
	return m, nil
}

// otherKubernetes refuses a machine where another Kubernetes node (or CNI network) has
// iptables chains: teardown removes every KUBE-* and CNI-* chain, so it would take theirs.
func otherKubernetes() error {
	for _, r := range Observe("").Rules {
		if _, line, _ := strings.Cut(r, ": "); strings.HasPrefix(line, ":KUBE-") || strings.HasPrefix(line, ":CNI-") {
			return fmt.Errorf("iptables already has chain %s: another Kubernetes node or CNI network runs on this machine, and a real node's teardown would remove its chains", strings.Fields(line)[0][1:])
		}
	}
	return nil
}

// lockStateDir takes an exclusive lock on stateDir/lock, polling until ctx ends. The
// lock file is removed by its holder on release, so a lock taken on a removed file is
// dropped and taken again.
func lockStateDir(ctx context.Context) (*os.File, error) {
	path := filepath.Join(stateDir, "lock")
	for {
		if err := os.MkdirAll(stateDir, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", stateDir, err)
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", path, err)
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			if sameFile(f, path) {
				return f, nil
			}
			f.Close()
			continue
		}
		f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the real node another process runs on this machine to stop (%s): %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}

func (m *machine) save() error {
	b, err := json.MarshalIndent(m.rec, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(stateDir, "record.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// Sweep undoes what a real node's run killed before its Stop left on the machine (its
// processes and containers, mounts, iptables chains, bridge, address, sysctls, cgroups
// and files), if any; Start does it too. It waits for a running node to stop first.
func Sweep(ctx context.Context, progress io.Writer) error {
	_, err := sweep(ctx, progress, "")
	return err
}

// sweep is Sweep, returning the machine's state after it, observed under the lock.
func sweep(ctx context.Context, progress io.Writer, binDir string) (MachineState, error) {
	lock, err := lockStateDir(ctx)
	if err != nil {
		return MachineState{}, err
	}
	defer lock.Close()
	if err := sweepLeftover(progress); err != nil {
		return MachineState{}, err
	}
	after := Observe(binDir)
	return after, errors.Join(os.Remove(filepath.Join(stateDir, "lock")), os.Remove(stateDir))
}

// sweepLeftover undoes a killed run's changes, as its record says. The caller holds the
// lock, so the run that wrote the record is gone.
func sweepLeftover(progress io.Writer) error {
	path := filepath.Join(stateDir, "record.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil || rec.Dir == "" {
		return fmt.Errorf("%s: not a record of a real node's run (remove it if no real node runs): %v", path, err)
	}
	fmt.Fprintf(progress, "realnode: sweeping what a killed run (pid %d, %s) left on the machine...\n", rec.PID, rec.Dir)
	if err := restore(rec, false); err != nil {
		return fmt.Errorf("sweeping what the real node of pid %d left (%s): %w", rec.PID, rec.Dir, err)
	}
	return os.Remove(path)
}

// addAddress puts Address on lo, noting it so that teardown removes it.
func (m *machine) addAddress() error {
	if hasAddress() {
		return fmt.Errorf("%s is already on an interface of this machine: another real node or program uses it", Address)
	}
	m.rec.AddedAddress = true
	if err := m.save(); err != nil {
		return err
	}
	return run("ip", "addr", "add", Address+"/32", "dev", "lo")
}

// sharedMount makes dir a recursively shared bind mount (removed by teardown, which
// unmounts everything under the work directory).
func (m *machine) sharedMount(dir string) error {
	return mountShared(dir)
}

// release tears the node's traces down and gives up the lock.
func (m *machine) release(keepDir bool) error {
	if m == nil || m.lock == nil {
		return nil
	}
	err := restore(m.rec, keepDir)
	m.after = Observe(m.binDir)
	if err == nil {
		err = errors.Join(os.Remove(filepath.Join(stateDir, "record.json")), os.Remove(filepath.Join(stateDir, "lock")), os.Remove(stateDir))
	}
	m.lock.Close()
	m.lock = nil
	return err
}

// restore puts the machine back as rec found it: processes, mounts, network, sysctls,
// cgroups and files. Each step runs even if an earlier one failed.
func restore(rec record, keepDir bool) error {
	steps := []struct {
		what string
		do   func() error
	}{
		{"killing the node's processes and containers", func() error { return killAll(rec.Dir) }},
		{"unmounting", func() error { return unmountUnder(rec.Dir) }},
		{"removing iptables chains", func() error { return removeChains(rec.Tables) }},
		{"removing the bridge", removeBridge},
		{"removing the node address", func() error {
			if rec.AddedAddress && hasAddress() {
				return run("ip", "addr", "del", Address+"/32", "dev", "lo")
			}
			return nil
		}},
		{"restoring sysctls", func() error { return writeSysctls(rec.Sysctls) }},
		{"removing cgroups", removeCgroups},
		{"removing files", func() error { return removeFiles(rec, keepDir) }},
	}
	var errs []error
	for _, s := range steps {
		if err := s.do(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.what, err))
		}
	}
	return errors.Join(errs...)
}

func removeFiles(rec record, keepDir bool) error {
	var errs []error
	for _, p := range hostPaths {
		if !rec.Existed[p] {
			errs = append(errs, os.RemoveAll(p))
		}
	}
	if rec.Existed["/var/lib/cni"] {
		results, _ := filepath.Glob("/var/lib/cni/results/" + networkName + "-*")
		for _, r := range results {
			errs = append(errs, os.Remove(r))
		}
	}
	if keepDir {
		// Logs and configuration stay; the state (image layers, volumes) goes.
		for _, d := range []string{"containerd", "kubelet", "runc", "cni/ipam", "cluster/etcd"} {
			errs = append(errs, os.RemoveAll(filepath.Join(rec.Dir, d)))
		}
	} else {
		errs = append(errs, os.RemoveAll(rec.Dir))
	}
	return errors.Join(errs...)
}

func run(name string, args ...string) error {
	out, err := execCommand(name, args...)
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out))
	}
	return nil
}
