package dashboard_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/deployd/deployd/internal/dashboard"
)

func TestHandler(t *testing.T) {
	h := dashboard.Handler()
	for _, tt := range []struct {
		name, path string
		code       int
		typ, body  string
	}{
		{"the page is at /", "/", 200, "text/html", `<script src="/ui/app.js" defer></script>`},
		{"its script", "/ui/app.js", 200, "text/javascript", "fetch(\"/events\""},
		{"its styles", "/ui/style.css", 200, "text/css", "@media (max-width"},
		{"no directory listing", "/ui/", 404, "", ""},
		{"no other path", "/nope", 404, "", ""},
		{"an unknown asset", "/ui/nope.js", 404, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			body, _ := io.ReadAll(rec.Body)
			if rec.Code != tt.code || !strings.HasPrefix(rec.Header().Get("Content-Type"), tt.typ) || !strings.Contains(string(body), tt.body) {
				t.Errorf("GET %s = %d %s, want %d %s with %q", tt.path, rec.Code, rec.Header().Get("Content-Type"), tt.code, tt.typ, tt.body)
			}
			if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
				t.Errorf("Content-Security-Policy %q: the page must load nothing from elsewhere", csp)
			}
		})
	}
}
