package daemon

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestReadyzFailsOnceShutdownStarts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stopping bool
		want     int
	}{
		{"running", false, http.StatusOK},
		{"shutting down", true, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &health{probed: true}
			h.stopping.Store(tc.stopping)
			rec := httptest.NewRecorder()
			h.routes().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if rec.Code != tc.want {
				t.Errorf("/readyz answered %d, want %d: %s", rec.Code, tc.want, rec.Body)
			}
			if tc.stopping && !strings.Contains(rec.Body.String(), "[-]shutdown") {
				t.Errorf("/readyz does not say why: %s", rec.Body)
			}
		})
	}
}
