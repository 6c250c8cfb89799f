// Package webhook receives GitHub webhooks: it checks the HMAC signature before reading
// anything else, and turns pushes to configured branches into work on the queue. It
// answers as soon as the work is queued: it never waits for git or Kubernetes.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
)

// MaxBody is the largest payload accepted; GitHub caps its own at 25 MiB.
const MaxBody = 25 << 20

// Queue is where accepted pushes go (controller.Controller).
type Queue interface {
	Enqueue(key config.Key, req controller.Request) bool
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
}

// New returns a handler verifying deliveries with the secret in secretPath (re-read
// when it changes). observe, when set, is told of every delivery.
func New(queue Queue, secretPath string, observe func(Result)) *Handler {
	return &Handler{queue: queue, secret: &secretFile{path: secretPath}, observe: observe}
}

// response is the JSON body of every answer.
type response struct {
	Message string   `json:"message"`
	Queued  []string `json:"queued,omitempty"`
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	res := Result{Event: r.Header.Get("X-GitHub-Event"), Delivery: r.Header.Get("X-GitHub-Delivery")}
	res.Status, res.Message, res.Queued = h.handle(w, r, res.Event)
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

func (h *Handler) handle(w http.ResponseWriter, r *http.Request, event string) (int, string, []config.Key) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return http.StatusMethodNotAllowed, "webhooks are POSTed", nil
	}
	secret, err := h.secret.read()
	if err != nil {
		return http.StatusServiceUnavailable, "webhooks are off: " + err.Error(), nil
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return http.StatusRequestEntityTooLarge, fmt.Sprintf("payload over %d MiB", MaxBody>>20), nil
		}
		return http.StatusBadRequest, "reading the payload: " + err.Error(), nil
	}
	if !validSignature(secret, raw, r.Header.Get("X-Hub-Signature-256")) {
		return http.StatusUnauthorized, "missing or wrong X-Hub-Signature-256: check the webhook's secret", nil
	}
	payload, err := payloadOf(r.Header.Get("Content-Type"), raw)
	if err != nil {
		return http.StatusBadRequest, err.Error(), nil
	}
	switch event {
	case "ping":
		return http.StatusOK, "pong", nil
	case "push":
		return h.push(payload)
	case "deployment":
		return h.deployment(payload)
	case "":
		return http.StatusBadRequest, "no X-GitHub-Event header", nil
	}
	return http.StatusAccepted, fmt.Sprintf("event %q is not one deployd acts on; ignored", event), nil
}

// Signature is the X-Hub-Signature-256 value GitHub sends for body: "sha256=<hex HMAC>".
// Senders of test and demo deliveries use it.
func Signature(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// validSignature checks GitHub's "sha256=<hex HMAC of the body>" in constant time.
func validSignature(secret, body []byte, header string) bool {
	got, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	sig, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(sig, mac.Sum(nil))
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

func (h *Handler) push(payload []byte) (int, string, []config.Key) {
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
		if h.queue.Enqueue(repo.Key(), controller.Request{Trigger: controller.TriggerWebhook}) {
			queued = append(queued, repo.Key())
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
		ID          int64  `json:"id"`
		SHA         string `json:"sha"`
		Ref         string `json:"ref"`
		Environment string `json:"environment"`
	} `json:"deployment"`
	Repository repository `json:"repository"`
}

// deployment queues a deploy of the GitHub deployment's SHA for the repo entry whose
// environment it names; another environment is another deployd's business.
func (h *Handler) deployment(payload []byte) (int, string, []config.Key) {
	var ev deploymentEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		return http.StatusBadRequest, "deployment payload is not valid JSON: " + err.Error(), nil
	}
	d := ev.Deployment
	if d.ID == 0 || len(d.SHA) != 40 {
		return http.StatusBadRequest, "deployment payload lacks deployment.id or a full deployment.sha", nil
	}
	urls := ev.Repository.urls()
	for _, repo := range h.queue.Config().Repos {
		if !sameRepo(repo, ev.Repository.FullName, urls) || !strings.EqualFold(repo.Environment, d.Environment) {
			continue
		}
		req := controller.Request{Trigger: controller.TriggerGitHubDeployment, Commit: d.SHA, Force: true, GitHubDeploymentID: d.ID, Ref: d.Ref}
		if h.queue.Enqueue(repo.Key(), req) {
			return http.StatusAccepted, fmt.Sprintf("GitHub deployment %d of %s queued", d.ID, d.SHA[:12]), []config.Key{repo.Key()}
		}
	}
	return http.StatusAccepted, fmt.Sprintf("environment %q of %s is not for this deployd; ignored", d.Environment, ev.Repository.FullName), nil
}
