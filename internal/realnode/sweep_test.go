package realnode

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

const childEnv = "REALNODE_TEST_CHILD"

// childReport is what the child test process prints once its node runs a Pod.
type childReport struct {
	Dir    string       `json:"dir"`
	PIDs   []int        `json:"pids"`
	Before MachineState `json:"before"`
}

// TestSweepAfterKill runs a node with a Pod in a child test process, SIGKILLs that
// process (as go test's -timeout or a CI runner would), and checks that Sweep (which
// Start runs first) leaves the machine as it was before.
func TestSweepAfterKill(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		runChild(t)
		return
	}
	Need(t)
	binDir, err := Binaries(t.Context(), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSweepAfterKill$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=1", BinEnv+"="+binDir)
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
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if child.Dir == "" {
		t.Fatal("the child never reported a running node")
	}
	if left := Observe(binDir); cmp.Equal(child.Before, left) {
		t.Error("after SIGKILL the machine looks as before: this test would not see a sweep that does nothing")
	}
	after, err := sweep(t.Context(), os.Stderr, binDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range child.PIDs {
		if alive(pid) {
			t.Errorf("process %s still runs after the sweep", describe(pid))
		}
	}
	if diff := cmp.Diff(child.Before, after); diff != "" {
		t.Errorf("machine state after the sweep differs from before the killed run (-before +after):\n%s", diff)
	}
	if _, err := os.Stat(child.Dir); !os.IsNotExist(err) {
		t.Errorf("the killed run's directory %s is still there (%v)", child.Dir, err)
	}
}

// runChild starts a node, runs a Pod on it, reports, and waits to be killed.
func runChild(t *testing.T) {
	opts := DefaultOptions()
	opts.Progress = os.Stderr
	n, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	img, err := SampleApp(t.Context(), n.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.LoadImage(t.Context(), img, SampleAppImage); err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(n.Cluster.Config)
	d := sampleDeployment("left", "left behind", false)
	d.Spec.Replicas = ptr(int32(1))
	if _, err := cs.AppsV1().Deployments("default").Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAvailable(t, cs, "default", "left", 1)
	b, _ := json.Marshal(childReport{Dir: n.Dir, PIDs: append(n.PIDs(), n.Cluster.PIDs()...), Before: n.MachineBefore()})
	fmt.Println(string(b))
	<-t.Context().Done() // killed before this ends
}
