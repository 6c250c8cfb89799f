package simcluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

const childEnv = "SIMCLUSTER_TEST_CHILD"

// TestClusterDiesWithItsParent starts a cluster in a child test process, SIGKILLs that
// process (as go test's -timeout or a CI runner would), and checks no component survives.
func TestClusterDiesWithItsParent(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		runChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestClusterDiesWithItsParent$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var child childReport
	scan := bufio.NewScanner(out)
	for scan.Scan() {
		if json.Unmarshal(scan.Bytes(), &child) == nil && len(child.PIDs) > 0 {
			break
		}
	}
	pids := child.PIDs
	if child.Dir != "" {
		t.Cleanup(func() { os.RemoveAll(child.Dir) }) // a SIGKILLed parent cannot remove it
	}
	if len(pids) != 5 {
		_ = cmd.Process.Kill()
		t.Fatalf("child reported pids %v, want the 5 components", pids)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(context.Context) (bool, error) {
		for _, pid := range pids {
			if alive(pid) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		for _, pid := range pids {
			if alive(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Errorf("component pid %d outlived its parent", pid)
			}
		}
	}
}

// alive reports whether pid runs and is not a zombie awaiting its (dead) parent's reaper.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	var p int
	var comm, state string
	if _, err := fmt.Sscanf(string(b), "%d %s %s", &p, &comm, &state); err != nil {
		return true
	}
	return state != "Z"
}

type childReport struct {
	PIDs []int
	Dir  string
}

func runChild() {
	c, err := Start(context.Background(), DefaultOptions())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	b, _ := json.Marshal(childReport{PIDs: c.PIDs(), Dir: c.Dir})
	fmt.Println(string(b))
	select {} // wait for the parent's SIGKILL
}
