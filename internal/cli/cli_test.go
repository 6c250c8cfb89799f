package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployd/deployd/internal/simcluster"
)

var env *simcluster.Env

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(Main(strings.Fields(os.Getenv(childEnv)), os.Stdout, os.Stderr))
	}
	os.Exit(simcluster.Main(m, &env))
}

// runCLI runs a command to completion and returns its exit code and output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := Run(context.Background(), args, &out, &errOut)
	var exit *ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.Code
	case err != nil:
		code = 1
		errOut.WriteString(err.Error())
	}
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		code, out, _ := runCLI(t, args...)
		if code != 0 || !strings.HasPrefix(out, "deployd ") || !strings.Contains(out, "go1.") {
			t.Errorf("%v: exit %d, output %q; want version, commit and Go version", args, code, out)
		}
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", "repos:\n  - {name: a/b, url: 'https://h/a/b', namespace: ns, interval: 0}\n")
	bad := writeFile(t, dir, "bad.yaml", "repos:\n  - name: a/b\n    url: https://h/a/b\n    namespace: Bad_NS\n    intervall: 1m\n")

	t.Run("a valid file passes and is summarised", func(t *testing.T) {
		code, out, _ := runCLI(t, "check", "--config", good, "--environment", "staging")
		if code != 0 || !strings.Contains(out, "ok, 1 repo(s)") || !strings.Contains(out, "a/b@staging -> namespace ns, main:deploy/manifests every webhook only") {
			t.Errorf("exit %d, output:\n%s", code, out)
		}
	})
	t.Run("an invalid file lists every problem with its line and fails", func(t *testing.T) {
		code, out, errOut := runCLI(t, "check", "--config", bad)
		want := bad + ":4: repos[0].namespace: \"Bad_NS\" is not a valid namespace name"
		if code != 1 || !strings.Contains(out, want) || !strings.Contains(out, bad+":5: repos[0].intervall: field not known (did you mean \"interval\"?)") {
			t.Errorf("exit %d, output:\n%s", code, out)
		}
		if !strings.Contains(errOut, "2 problem(s)") {
			t.Errorf("stderr = %q, want the count", errOut)
		}
	})
	t.Run("a missing file says so", func(t *testing.T) {
		code, _, errOut := runCLI(t, "check", "--config", filepath.Join(dir, "nope.yaml"))
		if code != 1 || !strings.Contains(errOut, "nope.yaml: no such file") {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
	})
	t.Run("the daemon refuses to start on an invalid file", func(t *testing.T) {
		code, _, errOut := runCLI(t, "--config", bad, "--kubeconfig", env.Kubeconfig, "--listen", "127.0.0.1:0")
		if code != 1 || !strings.Contains(errOut, "is not valid:") || !strings.Contains(errOut, ":4: repos[0].namespace") {
			t.Errorf("exit %d, stderr:\n%s", code, errOut)
		}
	})
}

func TestFlagsFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos: []\n")
	t.Run("an environment variable sets a flag", func(t *testing.T) {
		t.Setenv("DEPLOYD_LOG_FORMAT", "yaml")
		code, _, errOut := runCLI(t, "--config", cfg)
		if code != 1 || !strings.Contains(errOut, `--log-format "yaml": use text or json`) {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
	})
	t.Run("a flag wins over its environment variable", func(t *testing.T) {
		t.Setenv("DEPLOYD_ENVIRONMENT", "Not Valid")
		code, out, _ := runCLI(t, "check", "--config", cfg, "--environment", "qa")
		if code != 0 || !strings.Contains(out, "ok, 0 repo(s)") {
			t.Errorf("exit %d, output %q", code, out)
		}
	})
	t.Run("bad values are named", func(t *testing.T) {
		for _, tt := range []struct{ args, want string }{
			{"--log-level loud", `--log-level "loud": use debug, info, warn or error`},
			{"--environment Prod", `--environment: "Prod" is not a valid environment name`},
			{"--public-url deployd.local", `--public-url "deployd.local": give an absolute http(s) URL`},
			{"--listen 127.0.0.1:0 extra", `unexpected argument "extra"`},
		} {
			code, _, errOut := runCLI(t, append([]string{"--config", cfg}, strings.Fields(tt.args)...)...)
			if code == 0 || !strings.Contains(errOut, tt.want) {
				t.Errorf("%s: exit %d, stderr %q, want %q", tt.args, code, errOut, tt.want)
			}
		}
	})
	if got := EnvName("cache-dir"); got != "DEPLOYD_CACHE_DIR" {
		t.Errorf("EnvName(cache-dir) = %s", got)
	}
}
