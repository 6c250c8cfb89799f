package api

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/preview"
)

// fakePreviews keeps one preview and records the diffs asked for.
type fakePreviews struct {
	diffs []string
}

func (f *fakePreviews) List(repo string) []preview.Preview {
	p, _ := f.Get(repo, 7)
	return []preview.Preview{p}
}

func (f *fakePreviews) Get(repo string, number int) (preview.Preview, bool) {
	if number != 7 {
		return preview.Preview{}, false
	}
	changed := []preview.ChangedObject{{Object: "ConfigMap/app7/settings", APIVersion: "v1", Fields: []preview.FieldChange{{Path: "data.value", From: `"old-value"`, To: `"new-value"`}}}}
	return preview.Preview{Repo: repo, Number: 7, Environments: []preview.Result{{Environment: "dev", State: preview.StatePending},
		{Environment: "prod", State: preview.StateDone, Changes: preview.Changes{Changed: changed}}}}, true
}

func (f *fakePreviews) Diff(ctx context.Context, entries []config.Repo, ref string, files preview.Uploaded) ([]preview.Result, error) {
	var names []string
	for name := range files {
		names = append(names, name)
	}
	f.diffs = append(f.diffs, ref+" "+strings.Join(names, ","))
	return []preview.Result{{Environment: entries[0].Environment, State: preview.StateDone, Changes: preview.Changes{Unchanged: 1}}}, nil
}

func TestPreviewOperations(t *testing.T) {
	s := loaded(t, 20, 1)
	prev := &fakePreviews{}
	s.deps.Previews = prev
	s.opts.TokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(s.opts.TokenFile, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	do := func(method, path, token, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	files := func(names ...string) string {
		m := map[string]string{}
		for _, n := range names {
			m[n] = "kind: ConfigMap\n"
		}
		b, _ := json.Marshal(map[string]any{"files": m})
		return string(b)
	}
	big := `{"files":{"deploy/manifests/big.yaml":"` + strings.Repeat("x", 3<<20) + `"}}`
	tests := []struct {
		name, method, path, token, body string
		want                            int
		contains                        string
	}{
		{"a pull request's preview, one environment", "GET", "/deployment/team7/app7/previews/7?environment=prod", "", "", 200, `"environments":[{"environment":"prod"`},
		{"a ConfigMap's values are redacted for a reader without the token", "GET", "/deployment/team7/app7/previews/7?environment=prod", "", "", 200, `"path":"data.value","from":"<redacted>"`},
		{"and shown with it", "GET", "/deployment/team7/app7/previews/7?environment=prod", "tok", "", 200, `"from":"\"old-value\"","to":"\"new-value\""`},
		{"the list is redacted too", "GET", "/deployment/team7/app7/previews", "", "", 200, `"from":"<redacted>"`},
		{"an unknown pull request", "GET", "/deployment/team7/app7/previews/8", "", "", 404, "no preview of pull request #8 of team7/app7"},
		{"the list", "GET", "/deployment/team7/app7/previews", "", "", 200, `"previews":[{"repo":"team7/app7","number":7`},
		{"a diff needs the token", "POST", "/deployment/team7/app7/diff", "", files("deploy/manifests/a.yaml"), 401, "bearer token"},
		{"a diff of the branch", "POST", "/deployment/team7/app7/diff", "tok", "", 200, `"changes":false`},
		{"a diff of a local tree over the 1 MiB of other bodies", "POST", "/deployment/team7/app7/diff", "tok", big, 200, `"unchanged":1`},
		{"a tree over the upload limit is refused", "POST", "/deployment/team7/app7/diff", "tok", big + strings.Repeat(" ", MaxUpload-len(big)+1), 413, "request body over 12 MiB: upload only the manifests"},
		{"a path out of the repo is refused", "POST", "/deployment/team7/app7/diff", "tok", files("deploy/../../etc/passwd"), 400, "give paths relative to the repo's root"},
		{"an absolute path is refused", "POST", "/deployment/team7/app7/diff", "tok", files("/etc/passwd"), 400, "give paths relative to the repo's root"},
		{"ref and files together are refused", "POST", "/deployment/team7/app7/diff?ref=main", "tok", files("a.yaml"), 400, "give ref or files, not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(tt.method, tt.path, tt.token, tt.body)
			if rec.Code != tt.want || !strings.Contains(rec.Body.String(), tt.contains) {
				t.Errorf("%d %s, want %d with %q", rec.Code, cut(rec.Body.String()), tt.want, tt.contains)
			}
		})
	}
	if diff := cmp.Diff([]string{"refs/heads/main ", " deploy/manifests/big.yaml"}, prev.diffs); diff != "" {
		t.Errorf("diffs run (-want +got)\n%s", diff)
	}
}

func cut(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}
