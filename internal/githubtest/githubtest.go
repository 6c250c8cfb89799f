// Package githubtest is a local stand-in for the parts of GitHub's REST API deployd
// uses (deployments, deployment statuses, app installation tokens, check runs, commit
// statuses, pull request comments). It records every call and can be told to fail, be
// slow, or rate-limit, so tests assert on what deployd sent.
package githubtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Call is one recorded request.
type Call struct {
	Method, Path string
	Header       http.Header
	Body         map[string]any
	// Refused is true when the stand-in answered it with a failure it was told to give.
	Refused bool
	// Time is when the stand-in received it.
	Time time.Time
	// DeploymentID is the id given to a deployment this call created (0 otherwise).
	DeploymentID int64
}

// State is a deployment status' state, e.g. "success".
func (c Call) State() string { s, _ := c.Body["state"].(string); return s }

// Server is the stand-in.
type Server struct {
	URL string

	mu        sync.Mutex
	calls     []Call
	nextID    int64
	failures  int           // answer this many requests with 500
	rateLimit int           // answer this many with 403 rate limit (reset in 1s)
	delay     time.Duration // before answering
	down      bool          // answer every request with 503
	tokenTTL  time.Duration
	tokens    int
	tokenApps map[string]int64 // installation token → the App it was issued to
	checkRuns []*CheckRun
	comments  []Comment
}

// Cleaner registers cleanups (testing.TB does; so does gittest.Standalone).
type Cleaner interface{ Cleanup(func()) }

// New starts a server that stops at t's cleanup.
func New(t Cleaner) *Server {
	s := &Server{nextID: 1000, tokenTTL: time.Hour, tokenApps: map[string]int64{}}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = srv.URL + "/"
	t.Cleanup(srv.Close)
	return s
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	body, _ := io.ReadAll(r.Body)
	var parsed map[string]any
	_ = json.Unmarshal(body, &parsed)
	s.mu.Lock()
	delay, down := s.delay, s.down
	fail := s.failures > 0
	if fail {
		s.failures--
	}
	limited := !fail && s.rateLimit > 0
	if limited {
		s.rateLimit--
	}
	s.calls = append(s.calls, Call{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: parsed, Refused: down || fail || limited, Time: now})
	call := len(s.calls) - 1
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	switch {
	case down:
		http.Error(w, `{"message":"GitHub is down for the test"}`, http.StatusServiceUnavailable)
		return
	case fail:
		http.Error(w, `{"message":"server error for the test"}`, http.StatusInternalServerError)
		return
	case limited:
		w.Header().Set("X-RateLimit-Limit", "5000")
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Second).Unix()+1, 10))
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"message":"API rate limit exceeded for the test","documentation_url":"https://docs.github.com/rest/rate-limit"}`)
		return
	}
	s.route(w, r, parsed, call)
}

// route answers a request that is not refused; call is its index in s.calls.
func (s *Server) route(w http.ResponseWriter, r *http.Request, body map[string]any, call int) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case r.Method == http.MethodPost && len(parts) == 4 && parts[0] == "app" && parts[1] == "installations" && parts[3] == "access_tokens":
		s.mu.Lock()
		s.tokens++
		n, ttl := s.tokens, s.tokenTTL
		token := fmt.Sprintf("installation-token-%d", n)
		s.tokenApps[token] = jwtIssuer(r.Header.Get("Authorization"))
		s.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"token": token, "expires_at": time.Now().Add(ttl).UTC().Format(time.RFC3339)})
	case r.Method == http.MethodPost && len(parts) == 4 && parts[0] == "repos" && parts[3] == "deployments":
		if parts[2] == "invisible" {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"message":"Not Found"}`)
			return
		}
		s.mu.Lock()
		s.nextID++
		id := s.nextID
		s.calls[call].DeploymentID = id
		s.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"id": id, "ref": body["ref"], "environment": body["environment"]})
	case r.Method == http.MethodPost && len(parts) == 6 && parts[0] == "repos" && parts[3] == "deployments" && parts[5] == "statuses":
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"id": 1, "state": body["state"]})
	case r.Method == http.MethodGet && len(parts) == 6 && parts[3] == "deployments" && parts[5] == "statuses":
		out := []map[string]any{}
		calls := s.Calls()
		for i := len(calls) - 1; i >= 0; i-- { // newest first, as GitHub lists them
			if c := calls[i]; c.Method == http.MethodPost && c.Path == r.URL.Path && !c.Refused {
				out = append(out, c.Body)
			}
		}
		json.NewEncoder(w).Encode(out)
	case s.routeChecks(w, r, body):
	case r.Method == http.MethodGet && len(parts) == 4 && parts[0] == "repos" && parts[3] == "deployments":
		json.NewEncoder(w).Encode(s.deployments(strings.Join(parts[:3], "/"), r.URL.Query().Get("sha"), r.URL.Query().Get("environment")))
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"message":"the stand-in does not serve %s %s"}`, r.Method, r.URL.Path)
	}
}

// deployments lists the deployments created at path (repos/OWNER/REPO), newest first,
// with the sha and environment asked for (GitHub's filters), as GitHub shows them.
func (s *Server) deployments(path, sha, environment string) []map[string]any {
	out := []map[string]any{}
	calls := s.Calls()
	for i := len(calls) - 1; i >= 0; i-- {
		c := calls[i]
		if c.DeploymentID == 0 || strings.Trim(c.Path, "/") != path+"/deployments" {
			continue
		}
		ref, _ := c.Body["ref"].(string)
		env, _ := c.Body["environment"].(string)
		if (sha != "" && ref != sha) || (environment != "" && env != environment) {
			continue
		}
		out = append(out, map[string]any{"id": c.DeploymentID, "sha": ref, "ref": ref, "environment": env,
			"payload": c.Body["payload"], "description": c.Body["description"]})
	}
	return out
}

// Calls returns the calls so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Statuses returns the states posted for a GitHub deployment id, in order.
func (s *Server) Statuses(id int64) []string {
	var out []string
	suffix := fmt.Sprintf("/deployments/%d/statuses", id)
	for _, c := range s.Calls() {
		if c.Method == http.MethodPost && strings.HasSuffix(c.Path, suffix) && !c.Refused {
			if st := c.State(); st != "" {
				out = append(out, st)
			}
		}
	}
	return out
}

// Fail answers the next n requests with 500.
func (s *Server) Fail(n int) { s.mu.Lock(); s.failures = n; s.mu.Unlock() }

// RateLimit answers the next n requests with a rate-limit 403 whose reset is a second or two away.
func (s *Server) RateLimit(n int) { s.mu.Lock(); s.rateLimit = n; s.mu.Unlock() }

// SetDown makes every request answer 503 until SetDown(false).
func (s *Server) SetDown(down bool) { s.mu.Lock(); s.down = down; s.mu.Unlock() }

// SetDelay delays every answer.
func (s *Server) SetDelay(d time.Duration) { s.mu.Lock(); s.delay = d; s.mu.Unlock() }

// SetTokenTTL sets how long app installation tokens live.
func (s *Server) SetTokenTTL(d time.Duration) { s.mu.Lock(); s.tokenTTL = d; s.mu.Unlock() }

// Tokens is how many installation tokens were issued.
func (s *Server) Tokens() int { s.mu.Lock(); defer s.mu.Unlock(); return s.tokens }
