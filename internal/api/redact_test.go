package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/history"
)

// liveObjects answers the objects of testdata/live.yaml.
type liveObjects map[string]map[string]any

func (l liveObjects) Live(_ context.Context, r apply.Ref) (*unstructured.Unstructured, error) {
	return &unstructured.Unstructured{Object: l[r.Kind]}, nil
}

func TestLiveObjectValuesOnlyWithTheToken(t *testing.T) {
	raw, err := os.ReadFile("testdata/live.yaml")
	if err != nil {
		t.Fatal(err)
	}
	live := liveObjects{}
	rec := history.Record{Number: 8, Phase: history.Succeeded, Started: time.Now(), Ended: time.Now()}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var obj map[string]any
		if err := sigsyaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatal(err)
		}
		kind := obj["kind"].(string)
		live[kind] = obj
		rec.Objects = append(rec.Objects, history.Object{Object: kind + "/app/x", APIVersion: obj["apiVersion"].(string), Kind: kind, Namespace: "app", Name: "x", Action: "configured"})
	}
	s := loaded(t, 1, 0)
	s.deps.View.Record(config.Key{Name: "team0/app0", Environment: "prod"}, rec)
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("the-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := New(Deps{View: s.deps.View, Statuses: memStatuses{}, Objects: live}, Options{TokenFile: token}).Handler()
	get := func(t *testing.T, kind, auth string) string {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, "/deployment/team0/app0/objects/"+kind+"/x", nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", kind, rec.Code, rec.Body)
		}
		var v any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		return rec.Body.String()
	}
	for _, tt := range []struct {
		kind     string
		values   []string // in testdata/live.yaml, each marked "value-…"
		withName []string // names that stay
	}{
		{"ConfigMap", []string{"value-data", "dmFsdWUtYmluYXJ5"}, []string{`"DATABASE_URL"`, `"blob"`}},
		{"Deployment", []string{"value-env", "value-init-env"}, []string{`"API_KEY"`, `"INIT_KEY"`, `"secretKeyRef"`}},
		{"CronJob", []string{"value-cron-env"}, []string{`"CRON_KEY"`}},
		{"Widget", []string{"value-custom-env"}, []string{`"CUSTOM_KEY"`}},
	} {
		t.Run(tt.kind+" values are redacted for a reader without the token", func(t *testing.T) {
			for _, auth := range []string{"", "a-wrong-token"} {
				body := get(t, tt.kind, auth)
				for _, v := range append(tt.values, "last-applied") {
					if strings.Contains(body, v) {
						t.Errorf("token %q: %s is served: %s", auth, v, body)
					}
				}
				for _, n := range tt.withName {
					if !strings.Contains(body, n) {
						t.Errorf("token %q: %s is not served: %s", auth, n, body)
					}
				}
			}
		})
		t.Run(tt.kind+" values are served with the token", func(t *testing.T) {
			body := get(t, tt.kind, "the-token")
			for _, v := range tt.values {
				if !strings.Contains(body, v) {
					t.Errorf("%s is not served: %s", v, body)
				}
			}
		})
	}
	t.Run("Secret values are redacted even with the token", func(t *testing.T) {
		if body := get(t, "Secret", "the-token"); strings.Contains(body, "value-secret") || strings.Contains(body, "dmFsdWUtc2VjcmV0") {
			t.Errorf("served: %s", body)
		}
	})
}
