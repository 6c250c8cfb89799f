package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
)

const secret = "It's a Secret to Everybody"

// fakeQueue records what the handler queues; with fail set, it queues nothing and
// answers that error, as a follower that cannot reach the API server does.
type fakeQueue struct {
	cfg    *config.Config
	mu     sync.Mutex
	queued []config.Key
	reqs   []controller.Request
	fail   error
}

func (q *fakeQueue) Config() *config.Config { return q.cfg }

func (q *fakeQueue) Enqueue(ctx context.Context, k config.Key, req controller.Request) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if req.Trigger != controller.TriggerWebhook && req.Trigger != controller.TriggerGitHubDeployment && req.Trigger != controller.TriggerPromoteAuto {
		panic("trigger " + req.Trigger)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if q.fail != nil {
		return q.fail
	}
	q.reqs = append(q.reqs, req)
	q.queued = append(q.queued, k)
	return nil
}

func (q *fakeQueue) reset() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.queued, q.reqs, q.fail = nil, nil, nil
}

func sign(body []byte, key string) string {
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func newHandler(t testing.TB, reposYAML string) (*Handler, *fakeQueue) {
	t.Helper()
	cfg, err := config.Parse("repos.yaml", []byte(reposYAML), config.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	q := &fakeQueue{cfg: cfg}
	return New(q, path, DefaultOptions(), nil), q
}

const twoRepos = `repos:
  - {name: haraldsk/an-application, url: 'https://github.com/haraldsk/an-application.git', namespace: a, environment: dev}
  - {name: haraldsk/an-application, url: 'https://github.com/haraldsk/an-application.git', namespace: a, environment: prod, branch: release}
  - {name: other/byurl, url: 'git@github.com:Haraldsk/An-Application.git', namespace: b}
`

var deliveries atomic.Int64

// deliver sends a delivery with a new delivery id.
func deliver(h http.Handler, event, contentType string, body []byte, signature string) (*httptest.ResponseRecorder, map[string]any) {
	return deliverAs(h, fmt.Sprintf("72d3162e-cc78-11e3-81ab-%012d", deliveries.Add(1)), event, contentType, body, signature)
}

func deliverAs(h http.Handler, delivery, event, contentType string, body []byte, signature string) (*httptest.ResponseRecorder, map[string]any) {
	req := httptest.NewRequest(http.MethodPost, "/webhooks/github", strings.NewReader(string(body)))
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", delivery)
	req.Header.Set("Content-Type", contentType)
	if signature != "" {
		req.Header.Set("X-Hub-Signature-256", signature)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	return rec, out
}

func TestPush(t *testing.T) {
	push, err := os.ReadFile("testdata/push.json")
	if err != nil {
		t.Fatal(err)
	}
	withRef := func(ref string) []byte {
		return []byte(strings.Replace(string(push), `"ref": "refs/heads/main"`, `"ref": "`+ref+`"`, 1))
	}
	form := []byte("payload=" + url.QueryEscape(string(push)))
	tests := []struct {
		name        string
		event       string
		contentType string
		body        []byte
		signature   string
		wantStatus  int
		wantQueued  []config.Key
		wantMessage string
	}{
		{"a signed push to the configured branch is queued, matching by name and by URL", "push", "application/json", push, sign(push, secret), 202,
			[]config.Key{{Name: "haraldsk/an-application", Environment: "dev"}, {Name: "other/byurl", Environment: "production"}}, "push to main queued"},
		{"GitHub's form encoding works too", "push", "application/x-www-form-urlencoded", form, sign(form, secret), 202,
			[]config.Key{{Name: "haraldsk/an-application", Environment: "dev"}, {Name: "other/byurl", Environment: "production"}}, "push to main queued"},
		{"a push to the release branch queues the entry deploying it", "push", "application/json", withRef("refs/heads/release"), sign(withRef("refs/heads/release"), secret), 202,
			[]config.Key{{Name: "haraldsk/an-application", Environment: "prod"}}, "push to release queued"},
		{"a push to another branch is ignored", "push", "application/json", withRef("refs/heads/feature"), sign(withRef("refs/heads/feature"), secret), 200,
			nil, "branch feature is not deployed; ignored"},
		{"a tag is ignored", "push", "application/json", withRef("refs/tags/v1"), sign(withRef("refs/tags/v1"), secret), 200,
			nil, "refs/tags/v1 is not a branch; ignored"},
		{"a wrong signature is refused", "push", "application/json", push, sign(push, "guess"), 401,
			nil, "missing or wrong X-Hub-Signature-256: check the webhook's secret"},
		{"no signature is refused", "push", "application/json", push, "", 401,
			nil, "missing or wrong X-Hub-Signature-256: check the webhook's secret"},
		{"the old SHA-1 signature alone is refused", "push", "application/json", push, "sha1=0123", 401,
			nil, "missing or wrong X-Hub-Signature-256: check the webhook's secret"},
		{"a short signature is refused", "push", "application/json", push, sign(push, secret)[:70], 401,
			nil, "missing or wrong X-Hub-Signature-256: check the webhook's secret"},
		{"a signature that is not hex is refused", "push", "application/json", push, "sha256=" + strings.Repeat("zz", 32), 401,
			nil, "missing or wrong X-Hub-Signature-256: check the webhook's secret"},
		{"no event header is a bad request", "", "application/json", push, sign(push, secret), 400,
			nil, "no X-GitHub-Event header"},
		{"ping answers pong", "ping", "application/json", []byte(`{"zen":"Design for failure."}`), sign([]byte(`{"zen":"Design for failure."}`), secret), 200,
			nil, "pong"},
		{"an unknown event is acknowledged", "issues", "application/json", []byte(`{}`), sign([]byte(`{}`), secret), 202,
			nil, `event "issues" is not one deployd acts on; ignored`},
		{"a signed but broken payload is a bad request", "push", "application/json", []byte(`{"ref":`), sign([]byte(`{"ref":`), secret), 400,
			nil, "push payload is not valid JSON: unexpected end of JSON input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, q := newHandler(t, twoRepos)
			rec, out := deliver(h, tt.event, tt.contentType, tt.body, tt.signature)
			if rec.Code != tt.wantStatus || out["message"] != tt.wantMessage {
				t.Errorf("answer %d %v, want %d %q", rec.Code, out["message"], tt.wantStatus, tt.wantMessage)
			}
			if diff := cmp.Diff(tt.wantQueued, q.queued); diff != "" {
				t.Errorf("queued (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnknownRepoIsIgnored(t *testing.T) {
	h, q := newHandler(t, "repos:\n  - {name: x/y, url: 'https://h/x/y', namespace: a}\n")
	push, _ := os.ReadFile("testdata/push.json")
	rec, out := deliver(h, "push", "application/json", push, sign(push, secret))
	if rec.Code != 200 || out["message"] != "repository haraldsk/an-application is not configured here; ignored" || len(q.queued) != 0 {
		t.Errorf("answer %d %v, queued %v", rec.Code, out, q.queued)
	}
}

func TestOversizedPayload(t *testing.T) {
	h, q := newHandler(t, twoRepos)
	body := make([]byte, DefaultOptions().MaxBody+1)
	rec, _ := deliver(h, "push", "application/json", body, sign(body, secret))
	if rec.Code != http.StatusRequestEntityTooLarge || len(q.queued) != 0 {
		t.Errorf("answer %d, queued %v; want 413 and nothing", rec.Code, q.queued)
	}
}

func TestWithoutSecretWebhooksAreOff(t *testing.T) {
	cfg, _ := config.Parse("r.yaml", []byte("repos: []\n"), config.DefaultOptions())
	h := New(&fakeQueue{cfg: cfg}, "", DefaultOptions(), nil)
	rec, out := deliver(h, "ping", "application/json", []byte(`{}`), sign([]byte(`{}`), ""))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(out["message"].(string), "--webhook-secret-file") {
		t.Errorf("answer %d %v", rec.Code, out)
	}
}

func TestSecretRotation(t *testing.T) {
	h, _ := newHandler(t, twoRepos)
	body := []byte(`{}`)
	if rec, _ := deliver(h, "ping", "application/json", body, sign(body, secret)); rec.Code != 200 {
		t.Fatalf("ping with the first secret: %d", rec.Code)
	}
	if err := os.WriteFile(h.secret.path, []byte("rotated secret, longer"), 0o600); err != nil {
		t.Fatal(err)
	}
	if rec, _ := deliver(h, "ping", "application/json", body, sign(body, "rotated secret, longer")); rec.Code != 200 {
		t.Errorf("ping with the rotated secret: %d", rec.Code)
	}
}

func TestNormalizeURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://github.com/Owner/Repo.git":      "github.com/owner/repo",
		"git@github.com:owner/repo.git":          "github.com/owner/repo",
		"ssh://git@github.com/owner/repo":        "github.com/owner/repo",
		"git://github.com/owner/repo.git":        "github.com/owner/repo",
		"https://x-token@github.com/owner/repo/": "github.com/owner/repo",
	} {
		if got := normalizeURL(in); got != want {
			t.Errorf("normalizeURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDeploymentEvent(t *testing.T) {
	body := func(env string) []byte {
		return []byte(`{"action":"created","deployment":{"id":4242,"sha":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c","ref":"v1.2.0","environment":"` + env + `","task":"deploy"},"repository":{"full_name":"haraldsk/an-application"}}`)
	}
	h, q := newHandler(t, twoRepos)
	b := body("prod")
	rec, out := deliver(h, "deployment", "application/json", b, sign(b, secret))
	if rec.Code != 202 || len(q.reqs) != 1 {
		t.Fatalf("answer %d %v, requests %+v", rec.Code, out, q.reqs)
	}
	want := controller.Request{Trigger: controller.TriggerGitHubDeployment, Commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", Force: true, GitHubDeploymentID: 4242, Ref: "v1.2.0"}
	if diff := cmp.Diff(want, q.reqs[0]); diff != "" || q.queued[0] != (config.Key{Name: "haraldsk/an-application", Environment: "prod"}) {
		t.Errorf("request (-want +got):\n%s queued %v", diff, q.queued)
	}
	h, q = newHandler(t, twoRepos)
	b = body("staging")
	rec, out = deliver(h, "deployment", "application/json", b, sign(b, secret))
	if rec.Code != 202 || len(q.reqs) != 0 || !strings.Contains(out["message"].(string), "not for this deployd") {
		t.Errorf("other environment: %d %v %v", rec.Code, out, q.reqs)
	}
}
