package githubtest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// The login the stand-in gives a plain token's user.
const TokenUser = "deployd-bot"

// CheckRun is a check run as the stand-in keeps it.
type CheckRun struct {
	ID                                int64
	Owner, Repo                       string
	Name, HeadSHA, Status, Conclusion string
	DetailsURL, Title, Summary        string
	AppID                             int64 // the GitHub App that created it
	Annotations                       []map[string]any
}

// Comment is an issue or pull request comment as the stand-in keeps it.
type Comment struct {
	ID          int64
	Owner, Repo string
	Issue       int
	User, Body  string
}

// routeChecks answers check runs, commit statuses, issue comments and /user; it reports
// whether the request was one of those.
func (s *Server) routeChecks(w http.ResponseWriter, r *http.Request, body map[string]any) bool {
	p := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	n := len(p)
	switch {
	case r.Method == http.MethodGet && n == 1 && p[0] == "user":
		login, app := s.caller(r)
		if app != 0 {
			refuse(w, http.StatusForbidden, "Resource not accessible by integration")
			return true
		}
		json.NewEncoder(w).Encode(map[string]any{"login": login})
	case n < 4 || p[0] != "repos":
		return false
	case r.Method == http.MethodPost && n == 4 && p[3] == "check-runs":
		s.createCheckRun(w, r, p[1], p[2], body)
	case r.Method == http.MethodPatch && n == 5 && p[3] == "check-runs":
		s.updateCheckRun(w, r, p[1], p[2], p[4], body)
	case r.Method == http.MethodGet && n == 6 && p[3] == "commits" && p[5] == "check-runs":
		s.listCheckRuns(w, p[1], p[2], p[4], r.URL.Query())
	case r.Method == http.MethodPost && n == 5 && p[3] == "statuses":
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"id": 1, "state": body["state"], "context": body["context"]})
	case r.Method == http.MethodGet && n == 6 && p[3] == "issues" && p[5] == "comments":
		s.listComments(w, r, p[1], p[2], p[4])
	case r.Method == http.MethodPost && n == 6 && p[3] == "issues" && p[5] == "comments":
		issue, err := strconv.Atoi(p[4])
		if err != nil {
			refuse(w, http.StatusNotFound, "Not Found")
			return true
		}
		login, _ := s.caller(r)
		body, _ := body["body"].(string)
		c := s.AddComment(p[1], p[2], issue, login, body)
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(commentJSON(c))
	case r.Method == http.MethodPatch && n == 6 && p[3] == "issues" && p[4] == "comments":
		s.editComment(w, r, p[1], p[2], p[5], body)
	default:
		return false
	}
	return true
}

func refuse(w http.ResponseWriter, code int, msg string) {
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"message": msg})
}

// caller names who sent r: the login of a plain token, or the App of an installation token.
func (s *Server) caller(r *http.Request) (login string, app int64) {
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	token = strings.TrimPrefix(token, "token ")
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.tokenApps[token]; ok {
		return fmt.Sprintf("deployd-app-%d[bot]", id), id
	}
	return TokenUser, 0
}

// jwtIssuer reads (without verifying) the issuer of the App JWT in an Authorization header.
func jwtIssuer(header string) int64 {
	parts := strings.Split(strings.TrimPrefix(header, "Bearer "), ".")
	if len(parts) != 3 {
		return 0
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return 0
	}
	var claims struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return 0
	}
	id, _ := strconv.ParseInt(claims.Iss, 10, 64)
	return id
}

func (s *Server) createCheckRun(w http.ResponseWriter, r *http.Request, owner, repo string, body map[string]any) {
	_, app := s.caller(r)
	if app == 0 {
		refuse(w, http.StatusForbidden, "You must authenticate via a GitHub App.")
		return
	}
	s.mu.Lock()
	s.nextID++
	run := &CheckRun{ID: s.nextID, Owner: owner, Repo: repo, AppID: app, Status: "queued"}
	run.HeadSHA, _ = body["head_sha"].(string)
	run.apply(body)
	s.checkRuns = append(s.checkRuns, run)
	out := run.json()
	s.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(out)
}

func (s *Server) updateCheckRun(w http.ResponseWriter, r *http.Request, owner, repo, id string, body map[string]any) {
	_, app := s.caller(r)
	s.mu.Lock()
	var run *CheckRun
	for _, c := range s.checkRuns {
		if c.Owner == owner && c.Repo == repo && strconv.FormatInt(c.ID, 10) == id {
			run = c
		}
	}
	if run == nil || run.AppID != app {
		s.mu.Unlock()
		refuse(w, http.StatusNotFound, "Not Found")
		return
	}
	run.apply(body)
	out := run.json()
	s.mu.Unlock()
	json.NewEncoder(w).Encode(out)
}

// apply takes a create or update request's fields; annotations add up, as on GitHub.
func (c *CheckRun) apply(body map[string]any) {
	set := func(dst *string, v any) {
		if s, ok := v.(string); ok {
			*dst = s
		}
	}
	set(&c.Name, body["name"])
	set(&c.Status, body["status"])
	set(&c.Conclusion, body["conclusion"])
	set(&c.DetailsURL, body["details_url"])
	if out, ok := body["output"].(map[string]any); ok {
		set(&c.Title, out["title"])
		set(&c.Summary, out["summary"])
		anns, _ := out["annotations"].([]any)
		for _, a := range anns {
			if m, ok := a.(map[string]any); ok {
				c.Annotations = append(c.Annotations, m)
			}
		}
	}
}

func (c *CheckRun) json() map[string]any {
	return map[string]any{"id": c.ID, "name": c.Name, "head_sha": c.HeadSHA, "status": c.Status, "conclusion": c.Conclusion,
		"details_url": c.DetailsURL, "app": map[string]any{"id": c.AppID},
		"output": map[string]any{"title": c.Title, "summary": c.Summary, "annotations_count": len(c.Annotations)}}
}

func (s *Server) listCheckRuns(w http.ResponseWriter, owner, repo, ref string, q url.Values) {
	s.mu.Lock()
	runs := []map[string]any{}
	seen := map[string]bool{} // names listed: by default only the newest run of a name is
	for i := len(s.checkRuns) - 1; i >= 0; i-- {
		c := s.checkRuns[i]
		if c.Owner != owner || c.Repo != repo || c.HeadSHA != ref {
			continue
		}
		if name := q.Get("check_name"); name != "" && c.Name != name {
			continue
		}
		if app := q.Get("app_id"); app != "" && strconv.FormatInt(c.AppID, 10) != app {
			continue
		}
		if q.Get("filter") != "all" && seen[c.Name] {
			continue
		}
		seen[c.Name] = true
		runs = append(runs, c.json())
	}
	s.mu.Unlock()
	json.NewEncoder(w).Encode(map[string]any{"total_count": len(runs), "check_runs": runs})
}

func (s *Server) listComments(w http.ResponseWriter, r *http.Request, owner, repo, issue string) {
	q := r.URL.Query()
	perPage, _ := strconv.Atoi(q.Get("per_page"))
	if perPage <= 0 || perPage > 100 {
		perPage = 30
	}
	page, _ := strconv.Atoi(q.Get("page"))
	page = max(page, 1)
	var all []map[string]any
	for _, c := range s.Comments(owner, repo) {
		if strconv.Itoa(c.Issue) == issue {
			all = append(all, commentJSON(c))
		}
	}
	from, to := min((page-1)*perPage, len(all)), min(page*perPage, len(all))
	if to < len(all) {
		next := *r.URL
		q.Set("page", strconv.Itoa(page+1))
		next.RawQuery = q.Encode()
		w.Header().Set("Link", fmt.Sprintf(`<http://%s%s>; rel="next"`, r.Host, next.RequestURI()))
	}
	out := all[from:to]
	if out == nil {
		out = []map[string]any{}
	}
	json.NewEncoder(w).Encode(out)
}

func (s *Server) editComment(w http.ResponseWriter, r *http.Request, owner, repo, id string, body map[string]any) {
	login, _ := s.caller(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.comments {
		c := &s.comments[i]
		if c.Owner != owner || c.Repo != repo || strconv.FormatInt(c.ID, 10) != id {
			continue
		}
		if c.User != login {
			refuse(w, http.StatusForbidden, "Must have admin rights to Repository.")
			return
		}
		c.Body, _ = body["body"].(string)
		json.NewEncoder(w).Encode(commentJSON(*c))
		return
	}
	refuse(w, http.StatusNotFound, "Not Found")
}

func commentJSON(c Comment) map[string]any {
	return map[string]any{"id": c.ID, "body": c.Body, "user": map[string]any{"login": c.User}}
}

// AddComment adds a comment to an issue or pull request, as user (tests: someone else's).
func (s *Server) AddComment(owner, repo string, issue int, user, body string) Comment {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	c := Comment{ID: s.nextID, Owner: owner, Repo: repo, Issue: issue, User: user, Body: body}
	s.comments = append(s.comments, c)
	return c
}

// Comments returns a repository's comments, oldest first.
func (s *Server) Comments(owner, repo string) []Comment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Comment
	for _, c := range s.comments {
		if c.Owner == owner && c.Repo == repo {
			out = append(out, c)
		}
	}
	return out
}

// CheckRuns returns a repository's check runs, oldest first (the list endpoint answers
// newest first, by default only the newest of each name).
func (s *Server) CheckRuns(owner, repo string) []CheckRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []CheckRun
	for _, c := range s.checkRuns {
		if c.Owner == owner && c.Repo == repo {
			cp := *c
			cp.Annotations = append([]map[string]any(nil), c.Annotations...)
			out = append(out, cp)
		}
	}
	return out
}
