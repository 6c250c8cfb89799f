package daemon

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
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
