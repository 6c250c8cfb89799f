package cli

import (
	"bytes"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/pkg/client"
)

func TestColorOutput(t *testing.T) {
	terminal := func(io.Writer) bool { return true }
	pipe := func(io.Writer) bool { return false }
	for _, tt := range []struct {
		name     string
		env      map[string]string
		terminal func(io.Writer) bool
		want     bool
	}{
		{"a terminal gets colour", nil, terminal, true},
		{"a pipe gets none", nil, pipe, false},
		{"NO_COLOR turns it off on a terminal", map[string]string{"NO_COLOR": "1"}, terminal, false},
		{"a dumb terminal gets none", map[string]string{"TERM": "dumb"}, terminal, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := colorOutput(io.Discard, func(k string) string { return tt.env[k] }, tt.terminal); got != tt.want {
				t.Errorf("colorOutput = %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("a file is not a terminal", func(t *testing.T) {
		f, err := os.Create(t.TempDir() + "/out")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if isTerminal(f) || isTerminal(&bytes.Buffer{}) {
			t.Error("isTerminal is true for a file or a buffer")
		}
	})
}

var ansi = regexp.MustCompile("\x1b\\[[0-9]+m")

func TestStatusTableColor(t *testing.T) {
	str := func(s string) *string { return &s }
	st := &client.RepoStatus{Repo: "shop/web", Environments: []client.Environment{{
		Environment: "prod", Namespace: "shop", DeployedCommit: str("0123456789abcdef"), Phase: "failed", Rollout: "Failed",
		Paused: true, PauseReason: str("incident"), Current: &client.Record{Error: str("Deployment web: ProgressDeadlineExceeded")},
		DriftReason: str("paused: drift is not corrected"),
		Objects: []client.Object{
			{Kind: "Deployment", Name: "web", Status: "Failed", Replicas: &client.Replicas{Available: 1, Desired: 3}, Message: str("ProgressDeadlineExceeded"),
				Drift: &client.ObjectDrift{Fields: []client.DriftField{{Path: ".spec.replicas", Manager: str("kubectl")}, {Path: ".spec.paused"}}}},
			{Kind: "ConfigMap", Name: "settings-with-a-long-name", Status: "Current"},
			{Kind: "Service", Name: "web", Status: "Unknown"},
		},
	}}}
	var plain, colored bytes.Buffer
	if err := statusTable(&plain, st, false); err != nil {
		t.Fatal(err)
	}
	if err := statusTable(&colored, st, true); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(plain.String(), "\x1b") {
		t.Errorf("colour without a terminal:\n%q", plain.String())
	}
	for _, want := range []string{"\x1b[31mFailed\x1b[0m", "\x1b[32mCurrent\x1b[0m", "\x1b[31mfailed\x1b[0m", "\x1b[33mPAUSED\x1b[0m", "\x1b[33mOUT OF SYNC\x1b[0m: the cluster drifted from the applied manifests (paused: drift is not corrected)",
		"\n    drifted: .spec.replicas by kubectl, .spec.paused by another writer\n"} {
		if !strings.Contains(colored.String(), want) {
			t.Errorf("coloured table lacks %q:\n%s", want, colored.String())
		}
	}
	// The text says everything the colour does, and the columns stay aligned.
	if diff := cmp.Diff(plain.String(), ansi.ReplaceAllString(colored.String(), "")); diff != "" {
		t.Errorf("coloured table without its colour codes differs from the plain one (-plain +coloured):\n%s", diff)
	}
}
