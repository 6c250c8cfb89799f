package api

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestReadAuth(t *testing.T) {
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("read-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := loaded(t, 3, 1)
	guarded := New(open.deps, Options{TokenFile: token, ReadAuth: true})
	get := func(s *Server, auth string) int {
		req := httptest.NewRequest(http.MethodGet, "/deployment/team1/app1", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		return rec.Code
	}
	for _, tt := range []struct {
		name string
		s    *Server
		auth string
		want int
	}{
		{"reads are open by default", open, "", 200},
		{"with --api-read-auth a read needs the token", guarded, "", 401},
		{"a wrong token is refused", guarded, "Bearer nope", 401},
		{"the right token reads", guarded, "Bearer read-token", 200},
	} {
		if got := get(tt.s, tt.auth); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
}
