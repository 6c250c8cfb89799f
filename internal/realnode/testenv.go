package realnode

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
)

// ModeEnv chooses what tests that need a real node do: "require" (CI) fails them where
// Supported says a real node cannot run, "auto" (the default) tells why and falls back
// (to the simulated cluster, or skips a test that only makes sense on a real node),
// "off" never starts one.
const ModeEnv = "DEPLOYD_REALNODE"

// Mode returns ModeEnv's value: "require", "auto" or "off".
func Mode() (string, error) {
	switch m := os.Getenv(ModeEnv); m {
	case "":
		return "auto", nil
	case "auto", "require", "off":
		return m, nil
	default:
		return "", fmt.Errorf("%s=%q: want require, auto or off", ModeEnv, m)
	}
}

// Available says whether a test may start a real node: nil if so. Otherwise the error
// says why not; in mode "require" it is marked so that Need fails the test.
func Available() error {
	mode, err := Mode()
	if err != nil {
		return err
	}
	if mode == "off" {
		return fmt.Errorf("real node turned off (%s=off)", ModeEnv)
	}
	return Supported()
}

// Need stops a test that needs a real node where none can run: it fails in mode
// "require" and skips, saying why and how to run it, otherwise.
func Need(t testing.TB) {
	t.Helper()
	err := Available()
	if err == nil {
		return
	}
	if mode, _ := Mode(); mode == "require" {
		t.Fatalf("a real node is required (%s=require) but cannot run here: %v", ModeEnv, err)
	}
	fmt.Fprintf(os.Stderr, "realnode: %s needs a real node, which cannot run here: %v (runs as root on Linux; %s=require makes this a failure)\n", t.Name(), err, ModeEnv)
	t.Skipf("needs a real node, which cannot run here: %v (set %s=require to fail instead)", err, ModeEnv)
}

// StartForTest starts a real node and cluster for a test and stops them when it ends,
// on SIGINT or SIGTERM too. Call Need first.
func StartForTest(t testing.TB, opts Options) *Node {
	t.Helper()
	n, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() error {
		var err error
		once.Do(func() { err = n.Stop() })
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-sig:
			_ = stop()
			os.Exit(130)
		case <-done:
		}
	}()
	t.Cleanup(func() {
		signal.Stop(sig)
		close(done)
		if t.Failed() {
			// The logs say why: keep them (the state, image layers and volumes, goes).
			n.opts.KeepDir = true
			t.Logf("real node logs kept in %s (containerd.log, kubelet.log, kube-proxy.log, cluster/*.log)", n.Dir)
		}
		if err := stop(); err != nil {
			t.Errorf("stopping the real node: %v", err)
		}
	})
	return n
}
