package api

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// FuzzParams: any owner, repo, environment, kind and name in the path and query is
// answered with a 2xx or 4xx, never a 5xx or a panic.
func FuzzParams(f *testing.F) {
	f.Add("team7", "app7", "prod", "Deployment", "web0")
	f.Add("../..", "%00", "", "secret", "x")
	f.Add("a", "b", "very-long-environment-name-that-is-not-a-label-at-all-and-goes-on", "", "")
	s := loaded(f, 20, 2)
	h := s.Handler()
	f.Fuzz(func(t *testing.T, owner, repo, env, kind, name string) {
		for _, path := range []string{
			"/deployment/" + url.PathEscape(owner) + "/" + url.PathEscape(repo) + "?environment=" + url.QueryEscape(env),
			"/deployment/" + url.PathEscape(owner) + "/" + url.PathEscape(repo) + "/history/" + url.PathEscape(name),
			"/deployment/" + url.PathEscape(owner) + "/" + url.PathEscape(repo) + "/objects/" + url.PathEscape(kind) + "/" + url.PathEscape(name),
			"/deployments?phase=" + url.QueryEscape(env),
		} {
			req, err := http.NewRequest(http.MethodGet, "http://deployd"+path, nil)
			if err != nil {
				continue
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Errorf("GET %s answered %d: %s", path, rec.Code, rec.Body)
			}
		}
	})
}
