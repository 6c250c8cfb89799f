package webhook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
)

// TestDeploymentStatusEvent: another cluster's success in the environment an entry
// promotes from asks that entry for a promotion check; other states, environments and an
// entry whose source this deployd serves itself are left alone.
func TestDeploymentStatusEvent(t *testing.T) {
	cfg, err := config.Parse("repos.yaml", []byte(`repos:
  - {name: acme/web, url: 'https://github.com/acme/web.git', namespace: a, environment: production, promoteFrom: staging}
  - {name: acme/web, url: 'https://github.com/acme/web.git', namespace: b, environment: eu, promoteFrom: production, promotion: manual}
`), config.Options{DefaultEnvironment: "production", GitHub: true})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	const sha = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
	body := func(state, env, sha string) []byte {
		return []byte(`{"deployment_status":{"state":"` + state + `"},"deployment":{"id":9,"sha":"` + sha + `","environment":"` + env + `"},"repository":{"full_name":"acme/web"}}`)
	}
	tests := []struct {
		name, state, env, sha string
		code                  int
		want                  []config.Key
		message               string
	}{
		{"success in staging asks production", "success", "staging", sha, 202, []config.Key{{Name: "acme/web", Environment: "production"}}, "promotion check queued"},
		{"a failure is not acted on", "failure", "staging", sha, 202, nil, "acts only on success"},
		{"production is served here: eu is told by this deployd", "success", "production", sha, 202, nil, "no entry promotes"},
		{"a short sha is refused", "success", "staging", "0d1a26e", 400, nil, "full deployment.sha"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &fakeQueue{cfg: cfg}
			h := New(q, path, DefaultOptions(), nil)
			b := body(tt.state, tt.env, tt.sha)
			rec, out := deliver(h, "deployment_status", "application/json", b, sign(b, secret))
			msg, _ := out["message"].(string)
			if rec.Code != tt.code || !strings.Contains(msg, tt.message) {
				t.Errorf("answer %d %q, want %d with %q", rec.Code, msg, tt.code, tt.message)
			}
			if diff := cmp.Diff(tt.want, q.queued); diff != "" {
				t.Errorf("queued (-want +got):\n%s", diff)
			}
			for _, r := range q.reqs {
				if r.Trigger != controller.TriggerPromoteAuto || r.Commit != sha {
					t.Errorf("request %+v", r)
				}
			}
		})
	}
}
