package api

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/history"
)

// nextDeployment reads the stream until a deployment event and returns it.
func nextDeployment(t *testing.T, sc *bufio.Scanner) DeploymentEvent {
	t.Helper()
	event := ""
	for sc.Scan() {
		line := sc.Text()
		if e, ok := strings.CutPrefix(line, "event: "); ok {
			event = e
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok && event == "deployment" {
			var ev DeploymentEvent
			if err := json.Unmarshal([]byte(d), &ev); err != nil {
				t.Fatal(err)
			}
			return ev
		}
	}
	t.Fatalf("stream ended: %v", sc.Err())
	return DeploymentEvent{}
}

func TestAllEvents(t *testing.T) {
	s := loaded(t, 3, 1)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)

	t.Run("carries every repo's deployments", func(t *testing.T) {
		for _, name := range []string{"team2/app2", "team0/app0"} {
			s.deps.View.Record(config.Key{Name: name, Environment: "prod"}, history.Record{Number: 8, Phase: history.Queued, Started: time.Now(),
				Commit: history.Commit{SHA: "fedcba9876543210fedcba9876543210fedcba98"}})
			ev := nextDeployment(t, sc)
			if ev.Repo != name || ev.Environment != "prod" || ev.Record.Number != 8 || ev.Record.Commit.SHA != "fedcba9876543210fedcba9876543210fedcba98" {
				t.Errorf("event %+v, want %s's deployment-0008", ev, name)
			}
		}
	})
	t.Run("follows a repo a config reload adds", func(t *testing.T) {
		cfg := *s.deps.View.Config()
		added := config.Repo{Name: "Team9/New", URL: "https://git.example/new.git", Namespace: "new", Environment: "dev",
			Settings: config.Settings{Branch: "main", Path: "deploy/manifests", Timeout: time.Minute}}
		cfg.Repos = append(append([]config.Repo(nil), cfg.Repos...), added)
		s.deps.View.SetConfig(&cfg)
		s.deps.View.Record(added.Key(), history.Record{Number: 1, Phase: history.Applying, Started: time.Now()})
		if ev := nextDeployment(t, sc); ev.Repo != "Team9/New" || ev.Environment != "dev" || ev.Record.Phase != "applying" {
			t.Errorf("event %+v, want Team9/New's deployment-0001 applying", ev)
		}
	})
}

func TestAllEventsReadAuth(t *testing.T) {
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("read-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	guarded := New(loaded(t, 1, 1).deps, Options{TokenFile: token, ReadAuth: true})
	rec := httptest.NewRecorder()
	guarded.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/events", nil))
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("/events without the token under --api-read-auth: %d, want 401", rec.Code)
	}
}
