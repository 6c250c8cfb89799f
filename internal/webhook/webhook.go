// Package webhook receives GitHub webhooks: it checks the HMAC signature before reading
// anything else, and turns pushes to configured branches into work on the queue. It
// answers as soon as the work is queued: it never waits for git or Kubernetes.
package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
)

// Options bound what a client that is not (yet) known to hold the secret can make the
// webhook do: the signature covers the body, so a body is read before it is checked.
type Options struct {
	// MaxBody is the largest payload read, in bytes; a larger one is answered 413.
	// GitHub caps payloads at 25 MiB, but the push and deployment payloads deployd reads
	// are a few KiB (a push of many commits lists at most 20 of them).
	MaxBody int64
	// MaxReads is how many payloads are read at once; the rest wait up to ReadWait,
	// then are answered 503 with Retry-After. MaxReads × MaxBody bounds the memory
	// unauthenticated clients can hold.
	MaxReads int
	// ReadWait is how long a delivery waits for one of the MaxReads.
	ReadWait time.Duration
	// MaxReadsPerClient is how many of the MaxReads one client address may hold, so a
	// few clients trickling bodies cannot take them all; more wait up to ReadWait too.
	// Behind a proxy every delivery comes from the proxy: raise it to MaxReads there.
	MaxReadsPerClient int
	// ReadTimeout bounds the reading of a body (GitHub sends one within moments), so a
	// trickling client gives its read back long before the server's own timeout.
	ReadTimeout time.Duration
	// Remember is how many delivery ids (and GitHub deployment ids) are remembered to
	// drop a delivery sent again; the oldest are forgotten first.
	Remember int
	// RememberFor is how long they are remembered; a GitHub deployment created longer
	// ago than this is refused as stale, so a replay cannot outlive the memory.
	RememberFor time.Duration
}

// DefaultOptions are the limits deployd runs with.
func DefaultOptions() Options {
	return Options{MaxBody: 1 << 20, MaxReads: 8, ReadWait: 2 * time.Second, MaxReadsPerClient: 2, ReadTimeout: 10 * time.Second,
		Remember: 10000, RememberFor: 24 * time.Hour}
}

// Queue is where accepted pushes go: the controller's (controller.Local), or a
// follower's, which hands them to the leader.
type Queue interface {
	// Enqueue queues req; controller.ErrNotConfigured says the repo is not configured,
	// any other error that the request could not be queued (the caller should retry).
	Enqueue(ctx context.Context, key config.Key, req controller.Request) error
	Config() *config.Config
}

// Result is what a delivery led to, for logs and metrics.
type Result struct {
	// Event is the X-GitHub-Event header.
	Event string
	// Delivery is the X-GitHub-Delivery header.
	Delivery string
	// Status is the HTTP status answered.
	Status int
	// Message is the answer's message.
	Message string
	// Queued are the repos queued.
	Queued []config.Key
}

// Handler serves POST /webhooks/github.
type Handler struct {
	queue   Queue
	secret  *secretFile
	observe func(Result)
	opts    Options
	reads   chan struct{} // a slot per payload being read
	mu      sync.Mutex
	clients map[string]*clientReads // client address → its reads, while it has any
	seen    *recent                 // delivery ids and GitHub deployment ids taken
	now     func() time.Time
	// previews, when set, takes pull request events.
	previews Previews
}

// New returns a handler verifying deliveries with the secret in secretPath (re-read
// when it changes). observe, when set, is told of every delivery.
func New(queue Queue, secretPath string, opts Options, observe func(Result)) *Handler {
	return &Handler{queue: queue, secret: &secretFile{path: secretPath}, observe: observe, opts: opts,
		reads: make(chan struct{}, max(opts.MaxReads, 1)), clients: map[string]*clientReads{}, seen: newRecent(opts.Remember, opts.RememberFor), now: time.Now}
}

// response is the JSON body of every answer.
type response struct {
	Message string   `json:"message"`
	Queued  []string `json:"queued,omitempty"`
}

// maxHeader is the longest event name or delivery id taken: GitHub's are short words and
// GUIDs. A longer one is refused, and logged cut to this length.
const maxHeader = 100

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	event, delivery := r.Header.Get("X-GitHub-Event"), r.Header.Get("X-GitHub-Delivery")
	res := Result{Event: cut(event), Delivery: cut(delivery)}
	res.Status, res.Message, res.Queued = h.handle(w, r, event, delivery)
	body := response{Message: res.Message}
	for _, k := range res.Queued {
		body.Queued = append(body.Queued, k.String())
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(res.Status)
	_ = json.NewEncoder(w).Encode(body)
	if h.observe != nil {
		h.observe(res)
	}
}

func cut(s string) string {
	if len(s) > maxHeader {
		return s[:maxHeader]
	}
	return s
}

// badSignature is the answer to a missing, malformed or wrong signature.
const badSignature = "missing or wrong X-Hub-Signature-256: check the webhook's secret"

func (h *Handler) handle(w http.ResponseWriter, r *http.Request, event, delivery string) (int, string, []config.Key) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return http.StatusMethodNotAllowed, "webhooks are POSTed", nil
	}
	secret, err := h.secret.read()
	if err != nil {
		return http.StatusServiceUnavailable, "webhooks are off: " + err.Error(), nil
	}
	// Everything that can be refused without the body is, before a byte of it is read.
	sig, ok := parseSignature(r.Header.Get("X-Hub-Signature-256"))
	if !ok {
		return http.StatusUnauthorized, badSignature, nil
	}
	switch {
	case event == "":
		return http.StatusBadRequest, "no X-GitHub-Event header", nil
	case len(event) > maxHeader || len(delivery) > maxHeader:
		return http.StatusBadRequest, fmt.Sprintf("X-GitHub-Event or X-GitHub-Delivery over %d bytes: not GitHub's", maxHeader), nil
	}
	if r.ContentLength > h.opts.MaxBody {
		return http.StatusRequestEntityTooLarge, h.tooBig(), nil
	}
	raw, status, msg := h.read(w, r)
	if status != 0 {
		return status, msg, nil
	}
	if !hmac.Equal(sig, mac(secret, raw)) {
		return http.StatusUnauthorized, badSignature, nil
	}
	if delivery != "" {
		if !h.seen.claim("delivery "+delivery, h.now()) {
			return http.StatusOK, "duplicate delivery " + delivery + "; ignored", nil
		}
	}
	status, msg, queued := h.act(r.Context(), event, r.Header.Get("Content-Type"), raw)
	if status >= 500 && delivery != "" {
		h.seen.release("delivery " + delivery) // GitHub's retry must be taken
	}
	return status, msg, queued
}

func (h *Handler) act(ctx context.Context, event, contentType string, raw []byte) (int, string, []config.Key) {
	payload, err := payloadOf(contentType, raw)
	if err != nil {
		return http.StatusBadRequest, err.Error(), nil
	}
	switch event {
	case "ping":
		return http.StatusOK, "pong", nil
	case "push":
		return h.push(ctx, payload)
	case "deployment":
		return h.deployment(ctx, payload)
	case "pull_request":
		return h.pullRequest(payload)
	case "deployment_status":
		return h.deploymentStatus(ctx, payload)
	}
	return http.StatusAccepted, fmt.Sprintf("event %q is not one deployd acts on; ignored", event), nil
}

func (h *Handler) tooBig() string {
	return fmt.Sprintf("payload over %d KiB: deployd reads push and deployment payloads, which are smaller", h.opts.MaxBody>>10)
}

// read reads the body, at most MaxBody bytes and at most MaxReads bodies at once; a
// non-zero status is the answer when it could not.
func (h *Handler) read(w http.ResponseWriter, r *http.Request) ([]byte, int, string) {
	wait := time.NewTimer(h.opts.ReadWait)
	defer wait.Stop()
	cr, done := h.client(r)
	defer done()
	select {
	case cr.slots <- struct{}{}:
		defer func() { <-cr.slots }()
	case <-wait.C:
		w.Header().Set("Retry-After", "5")
		return nil, http.StatusServiceUnavailable, fmt.Sprintf("busy: this client's %d deliveries are being read; try again", cap(cr.slots))
	case <-r.Context().Done():
		return nil, http.StatusServiceUnavailable, "the client went away"
	}
	select {
	case h.reads <- struct{}{}:
		defer func() { <-h.reads }()
	case <-wait.C:
		w.Header().Set("Retry-After", "5")
		return nil, http.StatusServiceUnavailable, fmt.Sprintf("busy: %d deliveries are being read; try again", cap(h.reads))
	case <-r.Context().Done():
		return nil, http.StatusServiceUnavailable, "the client went away"
	}
	if h.opts.ReadTimeout > 0 {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.opts.ReadTimeout))
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, http.StatusRequestEntityTooLarge, h.tooBig()
		}
		return nil, http.StatusBadRequest, "reading the payload: " + err.Error()
	}
	return raw, 0, ""
}

// Signature is the X-Hub-Signature-256 value GitHub sends for body: "sha256=<hex HMAC>".
// Senders of test and demo deliveries use it.
func Signature(secret, body []byte) string {
	return "sha256=" + hex.EncodeToString(mac(secret, body))
}

// clientReads are one client address's reads.
type clientReads struct {
	slots chan struct{} // a slot per payload being read
	users int           // requests holding or waiting for a slot
}

// client returns the reads of the request's client address; done forgets them once no
// request of the client holds or waits for one.
func (h *Handler) client(r *http.Request) (cr *clientReads, done func()) {
	addr, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		addr = r.RemoteAddr
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	cr = h.clients[addr]
	if cr == nil {
		cr = &clientReads{slots: make(chan struct{}, max(h.opts.MaxReadsPerClient, 1))}
		h.clients[addr] = cr
	}
	cr.users++
	return cr, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if cr.users--; cr.users == 0 {
			delete(h.clients, addr)
		}
	}
}

// parseSignature reads GitHub's "sha256=<64 hex digits>".
func parseSignature(header string) ([]byte, bool) {
	got, ok := strings.CutPrefix(header, "sha256=")
	if !ok || len(got) != 2*sha256.Size {
		return nil, false
	}
	sig, err := hex.DecodeString(got)
	return sig, err == nil
}

func mac(secret, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return m.Sum(nil)
}

// validSignature checks GitHub's "sha256=<hex HMAC of the body>" in constant time.
func validSignature(secret, body []byte, header string) bool {
	sig, ok := parseSignature(header)
	return ok && hmac.Equal(sig, mac(secret, body))
}

// payloadOf returns the JSON payload of either content type GitHub sends.
func payloadOf(contentType string, raw []byte) ([]byte, error) {
	mt, _, _ := mime.ParseMediaType(contentType)
	switch mt {
	case "application/json", "":
		return raw, nil
	case "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(raw))
		if err != nil {
			return nil, fmt.Errorf("form payload: %v", err)
		}
		if p := form.Get("payload"); p != "" {
			return []byte(p), nil
		}
		return nil, errors.New("form payload has no payload= field")
	}
	return nil, fmt.Errorf("content type %q: use application/json or application/x-www-form-urlencoded", mt)
}

// repository is the payloads' repository: deployd matches it by name or by any URL.
type repository struct {
	FullName string `json:"full_name"`
	CloneURL string `json:"clone_url"`
	SSHURL   string `json:"ssh_url"`
	GitURL   string `json:"git_url"`
	HTMLURL  string `json:"html_url"`
}

func (r repository) urls() []string { return []string{r.CloneURL, r.SSHURL, r.GitURL, r.HTMLURL} }

// pushEvent is the part of GitHub's push payload deployd reads.
type pushEvent struct {
	Ref        string     `json:"ref"`
	After      string     `json:"after"`
	Deleted    bool       `json:"deleted"`
	Repository repository `json:"repository"`
}

func (h *Handler) push(ctx context.Context, payload []byte) (int, string, []config.Key) {
	var ev pushEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		return http.StatusBadRequest, "push payload is not valid JSON: " + err.Error(), nil
	}
	branch, isBranch := strings.CutPrefix(ev.Ref, "refs/heads/")
	if !isBranch {
		return http.StatusOK, fmt.Sprintf("%s is not a branch; ignored", ev.Ref), nil
	}
	if ev.Deleted {
		return http.StatusOK, fmt.Sprintf("branch %s was deleted; ignored", branch), nil
	}
	urls := ev.Repository.urls()
	var queued []config.Key
	otherBranch := false
	for _, repo := range h.queue.Config().Repos {
		if !sameRepo(repo, ev.Repository.FullName, urls) {
			continue
		}
		if repo.Branch != branch {
			otherBranch = true
			continue
		}
		err := h.queue.Enqueue(ctx, repo.Key(), controller.Request{Trigger: controller.TriggerWebhook})
		switch {
		case err == nil:
			queued = append(queued, repo.Key())
		case !errors.Is(err, controller.ErrNotConfigured):
			return http.StatusServiceUnavailable, fmt.Sprintf("push to %s not queued, send it again: %v", branch, err), queued
		}
	}
	switch {
	case len(queued) > 0:
		return http.StatusAccepted, fmt.Sprintf("push to %s queued", branch), queued
	case otherBranch:
		return http.StatusOK, fmt.Sprintf("branch %s is not deployed; ignored", branch), nil
	}
	return http.StatusOK, fmt.Sprintf("repository %s is not configured here; ignored", ev.Repository.FullName), nil
}

// sameRepo matches by owner/repo name or by URL, both case-insensitively.
func sameRepo(repo config.Repo, fullName string, urls []string) bool {
	if fullName != "" && strings.EqualFold(repo.Name, fullName) {
		return true
	}
	want := normalizeURL(repo.URL)
	for _, u := range urls {
		if u != "" && normalizeURL(u) == want {
			return true
		}
	}
	return false
}

// normalizeURL reduces a git URL to host/path: scheme, user, ".git" and case dropped.
func normalizeURL(raw string) string {
	s := strings.ToLower(strings.TrimSpace(raw))
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	} else if host, path, ok := strings.Cut(s, ":"); ok { // scp-like git@host:owner/repo
		s = host + "/" + path
	}
	if at := strings.Index(s, "@"); at >= 0 && at < strings.Index(s+"/", "/") {
		s = s[at+1:]
	}
	s = strings.TrimSuffix(strings.TrimSuffix(s, "/"), ".git")
	return s
}

// secretFile reads the webhook secret, again whenever the file changes.
type secretFile struct {
	path string

	mu      sync.Mutex
	modTime time.Time
	size    int64
	secret  []byte
}

func (s *secretFile) read() ([]byte, error) {
	if s.path == "" {
		return nil, errors.New("start deployd with --webhook-secret-file")
	}
	fi, err := os.Stat(s.path)
	if err != nil {
		return nil, fmt.Errorf("webhook secret file: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.secret != nil && fi.ModTime().Equal(s.modTime) && fi.Size() == s.size {
		return s.secret, nil
	}
	b, err := os.ReadFile(s.path)
	if err != nil {
		return nil, fmt.Errorf("webhook secret file: %w", err)
	}
	secret := []byte(strings.TrimSpace(string(b)))
	if len(secret) == 0 {
		return nil, fmt.Errorf("webhook secret file %s is empty", s.path)
	}
	s.secret, s.modTime, s.size = secret, fi.ModTime(), fi.Size()
	return secret, nil
}

// deploymentEvent is the part of GitHub's deployment payload deployd reads.
type deploymentEvent struct {
	Deployment struct {
		ID          int64     `json:"id"`
		SHA         string    `json:"sha"`
		Ref         string    `json:"ref"`
		Environment string    `json:"environment"`
		CreatedAt   time.Time `json:"created_at"`
	} `json:"deployment"`
	Repository repository `json:"repository"`
}

// deployment queues a deploy of the GitHub deployment's SHA for the repo entry whose
// environment it names; another environment is another deployd's business. Each GitHub
// deployment is queued once: its id is in the signed payload, so a replay under another
// delivery id is dropped too, and one older than the memory of ids is refused. Like a
// push it waits while the repo is paused (only the API's rollback deploys through a pause).
func (h *Handler) deployment(ctx context.Context, payload []byte) (int, string, []config.Key) {
	var ev deploymentEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		return http.StatusBadRequest, "deployment payload is not valid JSON: " + err.Error(), nil
	}
	d := ev.Deployment
	if d.ID == 0 || len(d.SHA) != 40 {
		return http.StatusBadRequest, "deployment payload lacks deployment.id or a full deployment.sha", nil
	}
	if !d.CreatedAt.IsZero() && h.now().Sub(d.CreatedAt) > h.opts.RememberFor {
		return http.StatusOK, fmt.Sprintf("GitHub deployment %d was created %s, over %s ago: stale; ignored", d.ID, d.CreatedAt.Format(time.RFC3339), h.opts.RememberFor), nil
	}
	urls := ev.Repository.urls()
	for _, repo := range h.queue.Config().Repos {
		if !sameRepo(repo, ev.Repository.FullName, urls) || !strings.EqualFold(repo.Environment, d.Environment) {
			continue
		}
		id := fmt.Sprintf("deployment %s %d", strings.ToLower(repo.Name), d.ID)
		if !h.seen.claim(id, h.now()) {
			return http.StatusOK, fmt.Sprintf("GitHub deployment %d was queued before; ignored", d.ID), nil
		}
		req := controller.Request{Trigger: controller.TriggerGitHubDeployment, Commit: d.SHA, Force: true, GitHubDeploymentID: d.ID, Ref: d.Ref}
		err := h.queue.Enqueue(ctx, repo.Key(), req)
		if err == nil {
			return http.StatusAccepted, fmt.Sprintf("GitHub deployment %d of %s queued", d.ID, d.SHA[:12]), []config.Key{repo.Key()}
		}
		h.seen.release(id)
		if !errors.Is(err, controller.ErrNotConfigured) {
			return http.StatusServiceUnavailable, fmt.Sprintf("GitHub deployment %d not queued, send it again: %v", d.ID, err), nil
		}
	}
	return http.StatusAccepted, fmt.Sprintf("environment %q of %s is not for this deployd; ignored", d.Environment, ev.Repository.FullName), nil
}
