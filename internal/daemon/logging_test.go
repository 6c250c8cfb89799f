package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/deploy"
	"github.com/deployd/deployd/internal/history"
)

func TestLogEventWarnsOfARebuiltInventory(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	repo := config.Repo{Name: "shop/web", Environment: "dev"}
	rec := history.Record{Number: 3, Phase: history.Waiting, Commit: history.Commit{SHA: "c2"}}
	logEvent(log, deploy.Event{Repo: repo, Record: rec, Rebuilt: &apply.Rebuilt{Objects: 2, Commit: "c1"}})
	logEvent(log, deploy.Event{Repo: repo, Record: rec})

	var warnings []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if m["level"] == "WARN" {
			delete(m, "time")
			delete(m, "msg")
			warnings = append(warnings, m)
		}
	}
	want := []map[string]any{{"level": "WARN", "repo": "shop/web", "env": "dev", "deployment": "deployment-0003",
		"objects": float64(2), "last_commit": "c1", "unlisted_types": nil}}
	if diff := cmp.Diff(want, warnings); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
}

func TestUnreachableGitHostWarnsOncePerRepo(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	noHost := fmt.Errorf("shop/web: fetching main: %w", &net.DNSError{Err: "no such host", Name: "github.com", IsNotFound: true})
	refused := errors.New(`shop/api: fetching main from https://git.example/api.git: Get "https://git.example/api.git/info/refs": dial tcp 10.0.0.1:443: connect: connection refused`)
	broken := errors.New("shop/web: fetching main: authentication required")
	for _, o := range []controller.Outcome{
		{Key: config.Key{Name: "shop/web"}, Action: controller.ActionCheckFailed, Err: noHost, Failures: 1},
		{Key: config.Key{Name: "shop/api"}, Action: controller.ActionCheckFailed, Err: refused, Failures: 1},
		{Key: config.Key{Name: "shop/web"}, Action: controller.ActionCheckFailed, Err: noHost, Failures: 2},
		{Key: config.Key{Name: "shop/api"}, Action: controller.ActionCheckFailed, Err: refused, Failures: 2},
		{Key: config.Key{Name: "shop/web"}, Action: controller.ActionCheckFailed, Err: noHost, Failures: 3},
		{Key: config.Key{Name: "shop/web"}, Action: controller.ActionCheckFailed, Err: broken, Failures: 4},
	} {
		logOutcome(log, o)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		got = append(got, fmt.Sprint(m["level"], " ", m["repo"]))
	}
	want := []string{"WARN shop/web", "WARN shop/api", "ERROR shop/web"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log lines at info level (-want +got):\n%s", diff)
	}
}
