package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// statusPattern is the route the status cache answers, as the mux names it (for metrics).
const statusPattern = "GET /deployment/{owner}/{repo}"

// statusCache keeps the encoded answers of GET /deployment/{owner}/{repo}, one per repo
// and environment filter, and serves them while nothing they show changed: the repo's
// view entries (their versions), the object statuses (the tracker's version) and the
// second its ages are counted in. Pipelines poll this endpoint: an answer is built once
// per change, not once per request. Keys are configured repos and environments only
// (unknown ones are answered by huma's 404), so the cache is bounded by the config.
type statusCache struct {
	mu      sync.RWMutex
	answers map[string]*cachedStatus
}

type cachedStatus struct {
	versions []uint64 // of the entries, in order
	statuses uint64
	second   int64
	body     []byte
}

// serveStatus answers a plain status request from the cache, building the answer on a
// miss; it returns false, having written nothing, for any request it leaves to huma
// (errors, validation, other formats), whose answers it does not repeat.
func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) bool {
	owner, repo, env, ok := statusRequest(r)
	if !ok || s.authorize(r.Header.Get("Authorization"), false) != nil {
		return false
	}
	es, err := s.entries(owner, repo, env)
	if err != nil {
		return false
	}
	now := time.Now()
	key := strings.ToLower(es[0].Repo.Name) + "\x00" + env
	versions := make([]uint64, len(es))
	for i, e := range es {
		versions[i] = e.Version
	}
	statuses := s.deps.Statuses.Version()
	s.cache.mu.RLock()
	c := s.cache.answers[key]
	s.cache.mu.RUnlock()
	if c == nil || c.second != now.Unix() || c.statuses != statuses || !slices.Equal(c.versions, versions) {
		body, err := encode(s.status(es, now))
		if err != nil {
			return false
		}
		c = &cachedStatus{versions: versions, statuses: statuses, second: now.Unix(), body: body}
		s.cache.mu.Lock()
		s.cache.answers[key] = c
		s.cache.mu.Unlock()
	}
	r.Pattern = statusPattern
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(c.body)))
	_, _ = w.Write(c.body)
	return true
}

// statusRequest parses GET /deployment/{owner}/{repo}[?environment=E] within the limits
// the operation declares; anything else is not a plain status request.
func statusRequest(r *http.Request) (owner, repo, env string, ok bool) {
	if r.Method != http.MethodGet {
		return "", "", "", false
	}
	if a := r.Header.Get("Accept"); a != "" && !strings.Contains(a, "json") && !strings.Contains(a, "*/*") {
		return "", "", "", false // huma negotiates other formats
	}
	rest, found := strings.CutPrefix(r.URL.Path, "/deployment/")
	if !found {
		return "", "", "", false
	}
	owner, repo, found = strings.Cut(rest, "/")
	if !found || owner == "" || repo == "" || strings.Contains(repo, "/") ||
		utf8.RuneCountInString(owner) > 39 || utf8.RuneCountInString(repo) > 100 {
		return "", "", "", false
	}
	q := r.URL.Query()
	for k := range q {
		if k != "environment" {
			return "", "", "", false
		}
	}
	if len(q["environment"]) > 1 || utf8.RuneCountInString(q.Get("environment")) > 63 {
		return "", "", "", false
	}
	return owner, repo, q.Get("environment"), true
}

// encode writes v as huma does (no HTML escaping, a closing newline).
func encode(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	err := enc.Encode(v)
	return b.Bytes(), err
}
