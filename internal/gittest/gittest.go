// Package gittest gives tests real git repositories and a real smart-HTTP server
// (git http-backend behind net/http/cgi) that can require a token, fail, hang or stop.
// It uses the git command line, which deployd itself never does.
package gittest

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
)

// TB is what gittest needs of a test (testing.TB has it); the demo supplies its own.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	TempDir() string
	Cleanup(func())
}

// Repo is an app repository: a bare repository the server serves, and a work tree
// tests commit in and push from.
type Repo struct {
	t TB
	// Bare is the served repository's path (use FileURL for file://).
	Bare string
	work string
}

// git runs git in dir and returns its trimmed output.
func git(t TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=Test Author", "GIT_AUTHOR_EMAIL=author@example.com",
		"GIT_COMMITTER_NAME=Test Author", "GIT_COMMITTER_EMAIL=author@example.com",
		"GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// NewRepo creates an empty repository under root/<name>.git with branch main.
func NewRepo(t TB, root, name string) *Repo {
	t.Helper()
	bare := filepath.Join(root, name+".git")
	if err := os.MkdirAll(filepath.Dir(bare), 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	git(t, root, "init", "-q", "--bare", "-b", "main", bare)
	git(t, bare, "config", "http.receivepack", "true")
	// As GitHub does: a commit can be fetched by its SHA (GitHub deployments of a tag or hotfix).
	git(t, bare, "config", "uploadpack.allowReachableSHA1InWant", "true")
	work := t.TempDir()
	git(t, work, "init", "-q", "-b", "main")
	git(t, work, "remote", "add", "origin", bare)
	return &Repo{t: t, Bare: bare, work: work}
}

// Head returns the SHA of the last commit made in the work tree.
func (r *Repo) Head() string {
	r.t.Helper()
	return git(r.t, r.work, "rev-parse", "HEAD")
}

// Git runs git in the served (bare) repository and returns its trimmed output, for
// tests reading what was pushed: Git("cat-file", "-p", "refs/tags/deployment-0001").
func (r *Repo) Git(args ...string) string {
	r.t.Helper()
	return git(r.t, r.Bare, args...)
}

// RejectPushes makes the served repository refuse every push over HTTP (the server's
// clients; the test's own Commit still pushes) with a pre-receive hook that exits 1
// (reject true), or accept them again (false).
func (r *Repo) RejectPushes(reject bool) {
	r.t.Helper()
	hook := filepath.Join(r.Bare, "hooks", "pre-receive")
	if !reject {
		if err := os.Remove(hook); err != nil && !os.IsNotExist(err) {
			r.t.Fatalf("%v", err)
		}
		return
	}
	if err := os.MkdirAll(filepath.Dir(hook), 0o755); err != nil {
		r.t.Fatalf("%v", err)
	}
	// git http-backend is a CGI program: its environment, which the hook inherits, says so.
	script := "#!/bin/sh\n[ -n \"$GATEWAY_INTERFACE\" ] || exit 0\necho 'pushes refused for the test' >&2\nexit 1\n"
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		r.t.Fatalf("%v", err)
	}
}

// FileURL is the repository's file:// URL.
func (r *Repo) FileURL() string { return "file://" + r.Bare }

// Commit writes files (path → content; empty content deletes) on branch, commits
// and pushes, returning the commit SHA.
func (r *Repo) Commit(branch, msg string, files map[string]string) string {
	r.t.Helper()
	r.checkout(branch)
	for path, content := range files {
		full := filepath.Join(r.work, path)
		if content == "" {
			git(r.t, r.work, "rm", "-q", "--ignore-unmatch", path)
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			r.t.Fatalf("%v", err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			r.t.Fatalf("%v", err)
		}
		git(r.t, r.work, "add", path)
	}
	git(r.t, r.work, "commit", "-q", "--allow-empty", "-m", msg)
	git(r.t, r.work, "push", "-q", "origin", branch)
	return git(r.t, r.work, "rev-parse", "HEAD")
}

// ForcePush rewrites branch to a single new root commit with files and force-pushes it.
func (r *Repo) ForcePush(branch, msg string, files map[string]string) string {
	r.t.Helper()
	git(r.t, r.work, "checkout", "-q", "--orphan", "rewrite-"+branch)
	git(r.t, r.work, "rm", "-rq", "--cached", "--ignore-unmatch", ".")
	for path, content := range files {
		full := filepath.Join(r.work, path)
		_ = os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			r.t.Fatalf("%v", err)
		}
		git(r.t, r.work, "add", path)
	}
	git(r.t, r.work, "commit", "-q", "-m", msg)
	git(r.t, r.work, "branch", "-q", "-f", branch)
	git(r.t, r.work, "checkout", "-q", "-f", branch)
	git(r.t, r.work, "branch", "-q", "-D", "rewrite-"+branch)
	git(r.t, r.work, "push", "-q", "-f", "origin", branch)
	return git(r.t, r.work, "rev-parse", "HEAD")
}

// PullRequest points refs/pull/<number>/head of the served repository at branch's head,
// as GitHub does for a pull request (from a fork too), and returns its SHA.
func (r *Repo) PullRequest(number int, branch string) string {
	r.t.Helper()
	git(r.t, r.work, "push", "-q", "-f", "origin", fmt.Sprintf("%s:refs/pull/%d/head", branch, number))
	return git(r.t, r.work, "rev-parse", branch)
}

// Checkout makes branch the work tree's, so the next Commit of a new branch starts there.
func (r *Repo) Checkout(branch string) {
	r.t.Helper()
	r.checkout(branch)
}

func (r *Repo) checkout(branch string) {
	switch {
	case git(r.t, r.work, "symbolic-ref", "--short", "HEAD") == branch:
	case git(r.t, r.work, "branch", "--list", branch) != "":
		git(r.t, r.work, "checkout", "-q", branch)
	default:
		git(r.t, r.work, "checkout", "-q", "-b", branch)
	}
}

// Server serves every repository under Root over smart HTTP.
type Server struct {
	// Root holds the served bare repositories.
	Root string
	// URL is the server's base URL: a repo is at URL + "/" + name + ".git".
	URL string
	// Token, when set, is required as the basic-auth password of every request.
	Token string

	handler  http.Handler
	addr     string
	mode     atomic.Value // "", "down", "error", "hang"
	mu       sync.Mutex
	srv      *http.Server // nil while stopped
	requests []string
	hang     chan struct{}
}

// NewServer starts a git server for the repositories under a new directory.
func NewServer(t TB) *Server {
	t.Helper()
	return NewServerOn(t, "127.0.0.1")
}

// NewServerOn is NewServer listening on host (an address Pods of a real node reach,
// such as realnode.Address) instead of loopback.
func NewServerOn(t TB, host string) *Server {
	t.Helper()
	backend, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("git --exec-path: %v", err)
	}
	s := &Server{Root: t.TempDir(), hang: make(chan struct{})}
	cgiHandler := &cgi.Handler{
		Path:   filepath.Join(strings.TrimSpace(string(backend)), "git-http-backend"),
		Env:    []string{"GIT_PROJECT_ROOT=" + s.Root, "GIT_HTTP_EXPORT_ALL=1"},
		Stderr: io.Discard, // "Not a git repository" for the tests that ask for a missing one
	}
	s.handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		s.mu.Lock()
		s.requests = append(s.requests, req.Method+" "+req.URL.Path+queryOf(req))
		hang := s.hang
		s.mu.Unlock()
		switch s.mode.Load() {
		case "down":
			http.Error(w, "git server down for the test", http.StatusServiceUnavailable)
			return
		case "error":
			http.Error(w, "git server failing for the test", http.StatusInternalServerError)
			return
		case "hang":
			select {
			case <-hang:
			case <-req.Context().Done():
			}
			return
		}
		if s.Token != "" {
			if _, pw, ok := req.BasicAuth(); !ok || pw != s.Token {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
		}
		cgiHandler.ServeHTTP(w, req)
	})
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("git server: %v", err)
	}
	s.addr = l.Addr().String()
	s.URL = "http://" + s.addr
	s.serve(l)
	t.Cleanup(func() {
		s.SetMode("")
		s.Stop()
	})
	return s
}

func (s *Server) serve(l net.Listener) {
	srv := &http.Server{Handler: s.handler}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
}

// Stop closes the server and its connections, as a machine that went away: connections
// to URL are refused until Start.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Start serves again at the same URL after Stop.
func (s *Server) Start(t TB) {
	t.Helper()
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		t.Fatalf("git server: listening again on %s: %v", s.addr, err)
	}
	s.serve(l)
}

func queryOf(r *http.Request) string {
	if r.URL.RawQuery == "" {
		return ""
	}
	return "?" + r.URL.RawQuery
}

// NewRepo creates a repository this server serves.
func (s *Server) NewRepo(t TB, name string) *Repo { return NewRepo(t, s.Root, name) }

// RepoURL is the HTTP URL of a repository named name.
func (s *Server) RepoURL(name string) string { return fmt.Sprintf("%s/%s.git", s.URL, name) }

// SetMode makes the server answer normally (""), with 503 ("down"), with 500 ("error"),
// or never ("hang").
func (s *Server) SetMode(mode string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.mode.Swap(mode)
	if old == "hang" && mode != "hang" {
		close(s.hang)
		s.hang = make(chan struct{})
	}
}

// Requests returns the requests served so far ("GET /app.git/info/refs?service=git-upload-pack", ...)
// and forgets them.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.requests
	s.requests = nil
	return out
}

// Standalone gives gittest (and githubtest) what they need outside a test, to programs
// such as the demo and the benchmark harness: temporary directories under Dir, Fatalf
// panics, and Close runs the cleanups, last first.
type Standalone struct {
	// Dir holds the directories TempDir hands out.
	Dir string

	mu       sync.Mutex
	n        int
	cleanups []func()
}

// Helper does nothing outside a test.
func (s *Standalone) Helper() {}

// Fatalf panics: outside a test there is nobody to report a failed setup step to.
func (s *Standalone) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

// TempDir returns a new directory under Dir.
func (s *Standalone) TempDir() string {
	s.mu.Lock()
	s.n++
	dir := filepath.Join(s.Dir, fmt.Sprintf("git-%d", s.n))
	s.mu.Unlock()
	_ = os.MkdirAll(dir, 0o755)
	return dir
}

// Cleanup registers f to run at Close.
func (s *Standalone) Cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, f)
}

// Close runs the registered cleanups, last first.
func (s *Standalone) Close() {
	s.mu.Lock()
	fs := s.cleanups
	s.cleanups = nil
	s.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
