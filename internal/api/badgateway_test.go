package api

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/logtest"
	"github.com/deployd/deployd/internal/view"
)

type refusedCluster struct{}

var errRefused = apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "x", nil)

func (refusedCluster) Live(context.Context, apply.Ref) (*unstructured.Unstructured, error) {
	return nil, errRefused
}

func (refusedCluster) SetPause(context.Context, config.Repo, view.Pause) error { return errRefused }

// TestBadGatewayLogsTheCause: a 502 tells the client what failed and the log why, with
// the repo.
func TestBadGatewayLogsTheCause(t *testing.T) {
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("the-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := loaded(t, 1, 1).deps.View
	for _, tt := range []struct {
		method, path, says string
	}{
		{http.MethodGet, "/deployment/team0/app0/objects/Deployment/web0", "reading Deployment/app0/web0 from the cluster failed"},
		{http.MethodPost, "/deployment/team0/app0/pause", "storing the pause state in the cluster failed"},
		{http.MethodPost, "/deployment/team0/app0/rollback?to=7", "storing the rollback's pause state in the cluster failed"},
	} {
		t.Run(tt.path, func(t *testing.T) {
			logs := &logtest.Buffer{}
			s := New(Deps{View: v, Statuses: memStatuses{}, Objects: refusedCluster{}, Pauser: refusedCluster{}},
				Options{TokenFile: token, Log: slog.New(slog.NewTextHandler(logs, nil))})
			req := httptest.NewRequest(tt.method, tt.path, nil)
			req.Header.Set("Authorization", "Bearer the-token")
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), tt.says) || strings.Contains(rec.Body.String(), "forbidden") {
				t.Errorf("%d %s, want 502 saying %q without the cause", rec.Code, rec.Body, tt.says)
			}
			if !strings.Contains(logs.String(), tt.says) || !strings.Contains(logs.String(), "repo=team0/app0") || !strings.Contains(logs.String(), "forbidden") {
				t.Errorf("log %q, want the cause with the repo", logs)
			}
		})
	}
}
