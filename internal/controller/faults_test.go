package controller_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/source"
)

// mountNamespaceEnv names, in a test's child process, the test it runs in a mount
// namespace of its own.
const mountNamespaceEnv = "DEPLOYD_TEST_MOUNT_NAMESPACE"

// inMountNamespace runs the test again in a child process with a mount namespace of its
// own (and a user namespace too when not root), where it may mount filesystems: they go
// away with the child, whatever happens to it, and nobody else sees them. It returns
// true in the child, which goes on with the test, and false in the parent, which has
// reported the child's result.
func inMountNamespace(t *testing.T) bool {
	t.Helper()
	if os.Getenv(mountNamespaceEnv) == t.Name() {
		// Mounts would otherwise propagate to the parent's namespace where / is shared.
		if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
			t.Fatalf("making the mount namespace private: %v", err)
		}
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), mountNamespaceEnv+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if uid, gid := os.Geteuid(), os.Getegid(); uid != 0 {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in a mount namespace of its own: %v\n%s", t.Name(), err, out)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("%s did not run in its child process:\n%s", t.Name(), out)
	}
	t.Logf("in a mount namespace of its own:\n%s", out)
	return false
}

// remount mounts the filesystem at dir again with flags (syscall.MS_RDONLY or none).
func remount(t *testing.T, dir string, flags uintptr) {
	t.Helper()
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|flags, ""); err != nil {
		t.Fatalf("remounting %s: %v", dir, err)
	}
}

// fill writes to path until the disk under it is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 64<<10)
	for {
		if _, err := f.Write(block); err != nil {
			if !strings.Contains(err.Error(), "no space left") {
				t.Fatalf("filling the disk: %v", err)
			}
			return
		}
	}
}

// checkFailed matches a failed check of name whose error contains every one of want.
func checkFailed(name string, want ...string) func([]controller.Deployment, []controller.Outcome) bool {
	return func(_ []controller.Deployment, os []controller.Outcome) bool {
	outcomes:
		for _, o := range os {
			if o.Key.Name != name || o.Action != controller.ActionCheckFailed || o.Err == nil {
				continue
			}
			for _, w := range want {
				if !strings.Contains(o.Err.Error(), w) {
					continue outcomes
				}
			}
			return true
		}
		return false
	}
}

// lastError returns the last error of name's outcomes.
func (h *harness) lastError(name string) error {
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	for i := len(h.rec.outcomes) - 1; i >= 0; i-- {
		if o := h.rec.outcomes[i]; o.Key.Name == name && o.Err != nil {
			return o.Err
		}
	}
	return nil
}

// TestCacheDiskFaults puts one repo's git cache on a small disk of its own (a tmpfs in a
// private mount namespace), then fills it, then makes it read-only. Each time that repo's
// checks fail saying what is wrong with which directory, the other repo keeps deploying
// new commits, and once the disk is fixed the repo deploys its new head.
func TestCacheDiskFaults(t *testing.T) {
	if !inMountNamespace(t) {
		return
	}
	srv := gittest.NewServer(t)
	faulty, healthy := srv.NewRepo(t, "a/faulty"), srv.NewRepo(t, "a/healthy")
	faulty.Commit("main", "one", manifests)
	healthySHA := healthy.Commit("main", "one", manifests)
	opts := controller.DefaultOptions()
	opts.BackoffBase, opts.BackoffMax = 20*time.Millisecond, 200*time.Millisecond
	h := start(t, "repos:\n"+repoLine("a/faulty", srv.RepoURL("a/faulty"), ", interval: 100ms")+repoLine("a/healthy", srv.RepoURL("a/healthy"), ", interval: 100ms"), opts)
	h.rec.waitFor(t, 10*time.Second, "both deployed", func(ds []controller.Deployment, _ []controller.Outcome) bool {
		return len(ds) == 2 && deployedCommit("a/healthy", healthySHA)(ds, nil)
	})

	// Move the faulty repo's cache onto a 512 KiB disk of its own.
	caches, err := filepath.Glob(filepath.Join(h.cacheDir, "a_faulty@*"))
	if err != nil || len(caches) != 1 {
		t.Fatalf("the faulty repo's cache: %v %v", caches, err)
	}
	cache := caches[0]
	if err := os.Rename(cache, cache+".before"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", cache, "tmpfs", 0, "size=512k"); err != nil {
		t.Fatalf("mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(cache, syscall.MNT_DETACH) })
	if out, err := exec.Command("cp", "-a", cache+".before/.", cache).CombinedOutput(); err != nil {
		t.Fatalf("copying the cache onto its disk: %v\n%s", err, out)
	}

	step := 0
	fault := func(name string, want string, inject, repair func()) {
		t.Run(name, func(t *testing.T) {
			step++
			inject()
			faultySHA := faulty.Commit("main", fmt.Sprintf("change %d", step), map[string]string{"deploy/manifests/cm.yaml": fmt.Sprintf("kind: ConfigMap\ndata: {step: '%d'}\n", step)})
			h.rec.waitFor(t, 10*time.Second, "the fault said where", checkFailed("a/faulty", "a/faulty: the git cache's disk is "+want+": cannot write to "+cache+": "))
			t.Logf("check error: %v", h.lastError("a/faulty"))
			healthySHA := healthy.Commit("main", fmt.Sprintf("change %d", step), map[string]string{"deploy/manifests/cm.yaml": fmt.Sprintf("kind: ConfigMap\ndata: {step: '%d'}\n", step)})
			h.rec.waitFor(t, 10*time.Second, "the healthy repo deployed meanwhile", deployedCommit("a/healthy", healthySHA))
			h.rec.mu.Lock()
			early := deployedCommit("a/faulty", faultySHA)(h.rec.deploys, nil)
			h.rec.mu.Unlock()
			if early {
				t.Fatal("the faulty repo's commit was deployed while its cache could not be written")
			}
			repair()
			h.rec.waitFor(t, 10*time.Second, "the faulty repo deployed once repaired", deployedCommit("a/faulty", faultySHA))
		})
	}
	filler := filepath.Join(cache, "filler")
	fault("a full disk", "full", func() { fill(t, filler) }, func() {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	})
	fault("a read-only disk", "read-only",
		func() { remount(t, cache, syscall.MS_RDONLY) },
		func() { remount(t, cache, 0) })

	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	for _, o := range h.rec.outcomes {
		if o.Key.Name == "a/healthy" && o.Err != nil {
			t.Errorf("the healthy repo failed: %v", o.Err)
		}
		if o.Result.Recloned != "" {
			t.Errorf("%s was recloned (%s): a disk fault is not a broken cache", o.Key.Name, o.Result.Recloned)
		}
	}
}

// TestForcePushIsDeployed rewrites the branch to an unrelated root commit: the controller
// deploys it, its files are read from the same cache (not a fresh clone), and a commit
// pushed on top of it is deployed in turn.
func TestForcePushIsDeployed(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "a/app")
	repo.Commit("main", "one", manifests)
	two := repo.Commit("main", "two", map[string]string{"deploy/manifests/cm.yaml": "kind: ConfigMap\ndata: {v: '2'}\n"})
	h := start(t, "repos:\n"+repoLine("a/app", srv.RepoURL("a/app"), ", interval: 100ms"), controller.DefaultOptions())
	h.rec.waitFor(t, 10*time.Second, "the old history deployed", deployedCommit("a/app", two))

	rewritten := repo.ForcePush("main", "rewritten", map[string]string{"deploy/manifests/secret.yaml": "kind: Secret\n"})
	h.rec.waitFor(t, 10*time.Second, "the rewritten branch deployed", deployedCommit("a/app", rewritten))
	h.rec.mu.Lock()
	cfg := h.rec.deploys[len(h.rec.deploys)-1].Repo
	h.rec.mu.Unlock()
	files, err := h.checker.Files(cfg, rewritten, "deploy/manifests", source.DefaultLimits())
	if err != nil || len(files) != 1 || string(files["deploy/manifests/secret.yaml"]) != "kind: Secret\n" {
		t.Errorf("the rewritten commit's manifests from the cache: %v, %v; want only secret.yaml", files, err)
	}

	three := repo.Commit("main", "on top of the rewrite", map[string]string{"deploy/manifests/cm.yaml": "kind: ConfigMap\n"})
	h.rec.waitFor(t, 10*time.Second, "the commit on top deployed", deployedCommit("a/app", three))
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	for _, o := range h.rec.outcomes {
		if o.Err != nil || o.Result.Recloned != "" {
			t.Errorf("outcome %s of %s: error %v, recloned %q; want neither", o.Action, o.Result.Commit, o.Err, o.Result.Recloned)
		}
	}
}
