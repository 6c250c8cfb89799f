package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestOversizedBodiesAreRefused(t *testing.T) {
	h := loaded(t, 20, 1).Handler()
	for _, tt := range []struct {
		name, method, path string
		size               int
		want               int
	}{
		{"a body at the limit is ignored by a read", http.MethodGet, "/deployment/team7/app7", MaxBody, http.StatusOK},
		{"a larger one is refused", http.MethodGet, "/deployment/team7/app7", MaxBody + 1, http.StatusRequestEntityTooLarge},
		{"a write's is refused before its token is checked", http.MethodPost, "/deployment/team7/app7/sync", MaxBody + 1, http.StatusRequestEntityTooLarge},
		{"a write with a small body still needs its token", http.MethodPost, "/deployment/team7/app7/sync", 10, http.StatusUnauthorized},
		{"an unknown path's is refused too", http.MethodPut, "/nope", 2 * MaxBody, http.StatusRequestEntityTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(strings.Repeat("x", tt.size)))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Fatalf("%s %s with %d bytes: %d %s, want %d", tt.method, tt.path, tt.size, rec.Code, rec.Body, tt.want)
			}
			if tt.want != http.StatusRequestEntityTooLarge {
				return
			}
			var problem struct {
				Status int    `json:"status"`
				Detail string `json:"detail"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &problem); err != nil || problem.Status != tt.want ||
				problem.Detail != "request body over 1 MiB: the API's operations take their input in the path and query" ||
				rec.Header().Get("Content-Type") != "application/problem+json" {
				t.Errorf("answer %s %q (%v), want huma's problem format", rec.Header().Get("Content-Type"), rec.Body, err)
			}
		})
	}
}
