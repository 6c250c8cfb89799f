package render

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestSandboxRefusesNetworkAndExec: in a process confined as a worker is, dialing a
// listening loopback server and running a program both fail, whatever Go code tries.
func TestSandboxRefusesNetworkAndExec(t *testing.T) {
	if addr := os.Getenv("RENDER_SANDBOX_PROBE"); addr != "" {
		base, err := dataBytes()
		if err != nil {
			fmt.Println("sandbox:", err)
			os.Exit(1)
		}
		if err := sandbox(base + 64<<20); err != nil {
			fmt.Println("sandbox:", err)
			os.Exit(1)
		}
		_, err = net.Dial("tcp", addr)
		fmt.Println("dial:", errors.Is(err, syscall.EPERM), err)
		err = exec.Command("/bin/true").Run()
		fmt.Println("exec:", errors.Is(err, syscall.EPERM), err)
		os.Exit(0)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSandboxRefusesNetworkAndExec$")
	cmd.Env = append(os.Environ(), "RENDER_SANDBOX_PROBE="+ln.Addr().String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	for _, want := range []string{"dial: true", "exec: true"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("probe said:\n%s\nwant a line starting %q (refused with EPERM)", out, want)
		}
	}
	select {
	case <-accepted:
		t.Error("the server accepted a connection from the sandboxed process")
	default:
	}
}
