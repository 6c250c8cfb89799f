package cli

import (
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSlowClientsAreCutOff opens many connections that send half a request header and
// stop (slowloris): deployd keeps answering others meanwhile, and closes each slow one
// once its read-header timeout (10 s) has passed.
func TestSlowClientsAreCutOff(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: a/b, url: 'https://h/a/b', namespace: ns}\n")
	base, _, _ := startDaemon(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", filepath.Join(dir, "cache"))
	addr := strings.TrimPrefix(base, "http://")

	const slow = 200
	conns := make([]net.Conn, 0, slow)
	for range slow {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: deployd\r\nX-Slow: ")); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	start := time.Now()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(base + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("a normal request while %d clients hang: %v %v", slow, resp, err)
	}
	resp.Body.Close()

	// Each slow connection is closed by the server, or answered with an error, within
	// the 10 s timeout and some slack; none is left open.
	for i, c := range conns {
		_ = c.SetReadDeadline(start.Add(20 * time.Second))
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("slow connection %d still open after %s", i, time.Since(start).Round(time.Second))
				}
				break // closed by deployd
			}
			if n > 0 && !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 4") {
				t.Fatalf("slow connection %d was answered %q", i, buf[:n])
			}
		}
	}
	if took := time.Since(start); took < 8*time.Second {
		t.Errorf("slow connections were closed after %s, before the read-header timeout", took)
	}
}
