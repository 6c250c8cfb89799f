package report

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/githubtest"
	"github.com/deployd/deployd/internal/history"
)

var repo = config.Repo{Name: "shop/web", Environment: "prod", EnvironmentURL: "https://web.example.com", ProductionEnvironment: true}

type drops struct {
	mu      sync.Mutex
	reasons []string
}

func (d *drops) add(_ config.Repo, _ int, _ string, reason string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reasons = append(d.reasons, reason)
}

func (d *drops) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.reasons...)
}

func newReporter(t *testing.T, gh *githubtest.Server, maxAge time.Duration) (*Reporter, *drops) {
	t.Helper()
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("gh-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	api, err := NewClient(ClientOptions{APIURL: gh.URL, TokenFile: token})
	if err != nil {
		t.Fatal(err)
	}
	d := &drops{}
	opts := DefaultOptions()
	opts.PublicURL, opts.MaxAge, opts.BackoffBase, opts.BackoffMax = "https://deployd.example.com", maxAge, 20*time.Millisecond, 200*time.Millisecond
	opts.Dropped = d.add
	return New(api, opts), d
}

func rec(n int, phase history.Phase, errMsg string) history.Record {
	return history.Record{Number: n, Phase: phase, Error: errMsg, Commit: history.Commit{SHA: "0123456789abcdef0123456789abcdef01234567"},
		Objects: []history.Object{{Object: "Deployment/web/web", Action: "configured", Status: "Current"}, {Object: "ConfigMap/web/old", Action: "pruned"}}}
}

func TestSequences(t *testing.T) {
	tests := []struct {
		name   string
		phases []history.Phase
		errMsg string
		want   []string
		desc   string
	}{
		{"success", []history.Phase{history.Queued, history.Applying, history.Waiting, history.Succeeded}, "", []string{"queued", "in_progress", "success"}, "1/1 objects ready"},
		{"failure", []history.Phase{history.Queued, history.Applying, history.Waiting, history.Failed}, "Deployment web: ProgressDeadlineExceeded", []string{"queued", "in_progress", "failure"}, "Deployment web: ProgressDeadlineExceeded"},
		{"error", []history.Phase{history.Queued, history.Applying, history.Error}, "deploy/x.yaml:3: ConfigMap/x: namespace \"a\" is not the repo's namespace", []string{"queued", "in_progress", "error"}, "deploy/x.yaml:3: ConfigMap/x: namespace \"a\" is not the repo's namespace"},
		{"superseded", []history.Phase{history.Queued, history.Applying, history.Waiting, history.Superseded}, "", []string{"queued", "in_progress", "inactive"}, "deployd deployment-0001 superseded by a newer deployment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gh := githubtest.New(t)
			r, _ := newReporter(t, gh, time.Minute)
			for _, p := range tt.phases {
				r.Record(repo, rec(1, p, tt.errMsg), 0)
			}
			r.Wait()
			calls := gh.Calls()
			create := calls[0]
			if create.Path != "/repos/shop/web/deployments" || create.Body["ref"] != rec(1, "", "").Commit.SHA || create.Body["environment"] != "prod" ||
				create.Body["auto_merge"] != false || len(create.Body["required_contexts"].([]any)) != 0 || create.Body["production_environment"] != true ||
				create.Header.Get("Authorization") != "Bearer gh-token" {
				t.Errorf("create deployment %+v", create)
			}
			if diff := cmp.Diff(tt.want, gh.Statuses(1001)); diff != "" {
				t.Errorf("statuses (-want +got):\n%s", diff)
			}
			last := calls[len(calls)-1]
			if last.Body["description"] != tt.desc || last.Body["log_url"] != "https://deployd.example.com/deployment/shop/web/history/1?environment=prod" ||
				last.Body["environment_url"] != "https://web.example.com" {
				t.Errorf("last status %+v", last.Body)
			}
			if (tt.name == "success") != (last.Body["auto_inactive"] == true) {
				t.Errorf("auto_inactive %v on %s", last.Body["auto_inactive"], tt.name)
			}
		})
	}
}

func TestDescriptionsFitGitHubsLimit(t *testing.T) {
	gh := githubtest.New(t)
	r, _ := newReporter(t, gh, time.Minute)
	r.Record(repo, rec(1, history.Error, strings.Repeat("very long reason ", 20)), 0)
	r.Wait()
	calls := gh.Calls()
	if d := []rune(calls[len(calls)-1].Body["description"].(string)); len(d) != 140 {
		t.Errorf("description of %d characters", len(d))
	}
}

func TestFailuresAreRetriedInOrder(t *testing.T) {
	gh := githubtest.New(t)
	gh.Fail(3)
	r, _ := newReporter(t, gh, time.Minute)
	for _, p := range []history.Phase{history.Queued, history.Applying, history.Succeeded} {
		r.Record(repo, rec(1, p, ""), 0)
	}
	r.Wait()
	if diff := cmp.Diff([]string{"queued", "in_progress", "success"}, gh.Statuses(1001)); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
}

func TestRateLimitIsHonouredWithoutBlocking(t *testing.T) {
	gh := githubtest.New(t)
	gh.RateLimit(1)
	r, _ := newReporter(t, gh, time.Minute)
	start := time.Now()
	for _, p := range []history.Phase{history.Queued, history.Applying, history.Succeeded} {
		r.Record(repo, rec(1, p, ""), 0)
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Errorf("Record blocked for %v while GitHub rate-limited", took)
	}
	r.Wait()
	if took := time.Since(start); took < time.Second {
		t.Errorf("reports sent after %v: the reset a second away was not waited for", took)
	}
	if diff := cmp.Diff([]string{"queued", "in_progress", "success"}, gh.Statuses(1001)); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
}

func TestGitHubDownCatchesUpOrDrops(t *testing.T) {
	t.Run("back within the bound: reports catch up", func(t *testing.T) {
		gh := githubtest.New(t)
		gh.SetDown(true)
		r, d := newReporter(t, gh, 10*time.Second)
		for _, p := range []history.Phase{history.Queued, history.Applying, history.Succeeded} {
			r.Record(repo, rec(1, p, ""), 0)
		}
		time.AfterFunc(500*time.Millisecond, func() { gh.SetDown(false) })
		r.Wait()
		if diff := cmp.Diff([]string{"queued", "in_progress", "success"}, gh.Statuses(1001)); diff != "" || len(d.list()) != 0 {
			t.Errorf("statuses (-want +got):\n%s\ndropped: %v", diff, d.list())
		}
	})
	t.Run("down past the bound: dropped and said so", func(t *testing.T) {
		gh := githubtest.New(t)
		gh.SetDown(true)
		r, d := newReporter(t, gh, 300*time.Millisecond)
		r.Record(repo, rec(1, history.Succeeded, ""), 0)
		r.Wait()
		if got := d.list(); len(got) != 1 || !strings.Contains(got[0], "GitHub did not take it within 300ms") {
			t.Errorf("dropped %v", got)
		}
	})
}

func TestInvisibleRepoIsReportedOnce(t *testing.T) {
	gh := githubtest.New(t)
	r, d := newReporter(t, gh, time.Minute)
	invisible := config.Repo{Name: "shop/invisible", Environment: "prod"}
	r.Record(invisible, rec(1, history.Succeeded, ""), 0)
	r.Record(invisible, rec(2, history.Succeeded, ""), 0)
	r.Wait()
	if got := d.list(); len(got) != 1 || !strings.Contains(got[0], "404") {
		t.Errorf("dropped %v: want one 404 report", got)
	}
}

func TestGitHubInitiatedDeploymentReportsOnItsID(t *testing.T) {
	gh := githubtest.New(t)
	r, _ := newReporter(t, gh, time.Minute)
	r.Record(repo, rec(1, history.Succeeded, ""), 4242)
	r.Wait()
	for _, c := range gh.Calls() {
		if strings.HasSuffix(c.Path, "/deployments") {
			t.Errorf("a deployment was created: %s", c.Path)
		}
	}
	if diff := cmp.Diff([]string{"queued", "in_progress", "success"}, gh.Statuses(4242)); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
}

func TestAppTokensAreRefreshed(t *testing.T) {
	gh := githubtest.New(t)
	gh.SetTokenTTL(30 * time.Second) // inside ghinstallation's one-minute refresh margin: every call refreshes
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	keyFile := filepath.Join(t.TempDir(), "app.pem")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	api, err := NewClient(ClientOptions{APIURL: gh.URL, AppID: 7, AppKeyFile: keyFile, InstallationID: 99})
	if err != nil {
		t.Fatal(err)
	}
	r := New(api, DefaultOptions())
	r.Record(repo, rec(1, history.Succeeded, ""), 0)
	r.Wait()
	if gh.Tokens() < 2 {
		t.Errorf("%d installation tokens issued, want one per call once they near expiry", gh.Tokens())
	}
	var sawToken bool
	for _, c := range gh.Calls() {
		if c.Path == "/app/installations/99/access_tokens" && !strings.HasPrefix(c.Header.Get("Authorization"), "Bearer ") {
			t.Errorf("token request without the app's JWT: %v", c.Header.Get("Authorization"))
		}
		if strings.HasPrefix(c.Path, "/repos/") && strings.HasPrefix(c.Header.Get("Authorization"), "token installation-token-") {
			sawToken = true
		}
	}
	if !sawToken {
		t.Error("API calls did not carry an installation token")
	}
}
