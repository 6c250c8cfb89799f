// Package api serves deployd's status API over HTTP with huma, from the in-memory view:
// what each repo runs, its rollout status and history, and the actions (sync, pause,
// resume) that go through the work queue. Its OpenAPI document is committed under openapi/.
package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/drift"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/rollout"
	"github.com/deployd/deployd/internal/version"
	"github.com/deployd/deployd/internal/view"
)

// Queue takes sync requests: the controller's (controller.Local), or a follower's,
// which hands them to the leader and can fail.
type Queue interface {
	// Enqueue queues req; controller.ErrNotConfigured says the repo left the config,
	// any other error that the request could not be queued.
	Enqueue(ctx context.Context, key config.Key, req controller.Request) error
}

// Statuses gives live object statuses (rollout.Tracker).
type Statuses interface {
	Get(r apply.Ref) rollout.Tracked
	// Changed is closed at the next status change.
	Changed() <-chan struct{}
	// Version grows at every status update; an answer built from the statuses stays
	// right while it is the same.
	Version() uint64
}

// Objects reads a live object from the cluster.
type Objects interface {
	Live(ctx context.Context, ref apply.Ref) (*unstructured.Unstructured, error)
}

// Pauser stores a repo's pause state durably.
type Pauser interface {
	SetPause(ctx context.Context, repo config.Repo, p view.Pause) error
}

// ConfigState tells the config in force and the last reload's error.
type ConfigState interface {
	State() config.State
}

// Options configure the API.
type Options struct {
	// TokenFile holds the bearer token for the write endpoints; without it they are refused.
	TokenFile string
	// ReadAuth requires the token on read endpoints too.
	ReadAuth bool
	// PublicURL is the base of links the API hands out.
	PublicURL string
	// Streams bound the event streams; zero fields take DefaultStreamOptions' values.
	Streams StreamOptions
	// Log receives the causes of 502 answers (the API server's words may name deployd's
	// rights, so the client gets what failed and the log why); nil discards them.
	Log *slog.Logger
	// Observe times each status request answered on the fast path (see Listener), which
	// the HTTP server's middleware does not see; nil discards the times.
	Observe func(took time.Duration)
}

// Deps are what the API reads and acts through.
type Deps struct {
	View     *view.View
	Queue    Queue
	Statuses Statuses
	Objects  Objects
	Pauser   Pauser
	Config   ConfigState
	// Drift tells each repo's drift (drift.Detector); nil shows every repo in sync.
	Drift Drift
	// Previews serves pull request previews and diffs (preview.Service); nil leaves
	// their operations out.
	Previews Previews
}

// Drift tells a repo's drift from what deployd applied (drift.Detector).
type Drift interface {
	Repo(key config.Key) drift.Status
}

// Server is the API.
type Server struct {
	deps Deps
	opts Options
	api  huma.API
	mux  *http.ServeMux
	// closing is closed when the server shuts down, ending event streams, which would
	// otherwise hold a graceful shutdown until its deadline.
	closing   chan struct{}
	closeOnce sync.Once
	cache     statusCache
	hub       *hub
}

// CloseStreams ends every event stream (http.Server.RegisterOnShutdown).
func (s *Server) CloseStreams() { s.closeOnce.Do(func() { close(s.closing) }) }

// New registers every operation on a new mux.
func New(deps Deps, opts Options) *Server {
	mux := http.NewServeMux()
	cfg := huma.DefaultConfig("deployd", strings.TrimPrefix(version.Version, "v"))
	cfg.CreateHooks = nil // no $schema links in responses: clients read the committed spec
	cfg.Info.Description = "What deployd runs in the cluster, per repo and environment, with rollout status and history."
	cfg.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		"bearer": {Type: "http", Scheme: "bearer", Description: "The token in deployd's --api-token-file."},
	}
	opts.Streams = opts.Streams.orDefaults()
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{deps: deps, opts: opts, api: humago.New(mux, cfg), mux: mux, closing: make(chan struct{}),
		cache: statusCache{answers: map[string]*cachedStatus{}}}
	s.hub = newHub(s, opts.Streams)
	s.api.UseMiddleware(s.authorizeOperation) // before the operations: huma binds middleware at registration
	s.register()
	s.registerCommits()
	s.registerEvents()
	s.registerPreviews()
	return s
}

// MaxBody is the largest request body the API takes, the limit huma applies to
// operations that read one. No operation does yet, so a larger body is refused before
// anything else, the token included, instead of being drained by the server.
const MaxBody = 1 << 20

// Handler serves the API, its OpenAPI document (/openapi.json, /openapi.yaml) and docs
// (/docs); plain status requests are answered from the status cache.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := int64(MaxBody)
		if isUpload(r) {
			limit = MaxUpload
		}
		if r.ContentLength > limit {
			refuseBody(w, limit)
			return
		}
		if r.Body != http.NoBody { // net/http's for a request without one
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		if s.serveStatus(w, r) {
			return
		}
		if isStream(r) {
			release, err := s.hub.admit(clientOf(r))
			if err != nil {
				w.Header().Set("Retry-After", "30")
				problem(w, huma.NewError(http.StatusServiceUnavailable, err.Error()))
				return
			}
			defer release()
		}
		s.mux.ServeHTTP(w, r)
	})
}

// isStream tells an event stream's request: GET /events or /deployment/{owner}/{repo}/events.
func isStream(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	if r.URL.Path == "/events" {
		return true
	}
	parts := strings.Split(r.URL.Path, "/")
	return len(parts) == 5 && parts[1] == "deployment" && parts[4] == "events"
}

// isUpload tells a request of POST /deployment/{owner}/{repo}/diff, which may carry a
// local tree's files.
func isUpload(r *http.Request) bool {
	if r.Method != http.MethodPost {
		return false // and nothing split: a GET is the status cache's hot path
	}
	parts := strings.Split(r.URL.Path, "/")
	return len(parts) == 5 && parts[1] == "deployment" && parts[4] == "diff"
}

// clientOf is the client's address, without its port.
func clientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// problem writes err in huma's error format.
func problem(w http.ResponseWriter, err huma.StatusError) {
	body, _ := encode(err)
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(err.GetStatus())
	_, _ = w.Write(body)
}

// refuseBody answers 413 in huma's error format.
func refuseBody(w http.ResponseWriter, limit int64) {
	w.Header().Set("Connection", "close")
	msg := fmt.Sprintf("request body over %d MiB: the API's operations take their input in the path and query", limit>>20)
	if limit != MaxBody {
		msg = fmt.Sprintf("request body over %d MiB: upload only the manifests", limit>>20)
	}
	problem(w, huma.NewError(http.StatusRequestEntityTooLarge, msg))
}

// OpenAPI returns the API's OpenAPI document.
func (s *Server) OpenAPI() *huma.OpenAPI { return s.api.OpenAPI() }

// authorizeOperation checks the bearer token of every operation before its input is read:
// an operation with a security requirement (the write endpoints) needs it, the others
// only with --api-read-auth.
func (s *Server) authorizeOperation(ctx huma.Context, next func(huma.Context)) {
	write := len(ctx.Operation().Security) > 0
	if err := s.authorize(ctx.Header("Authorization"), write); err != nil {
		var e *huma.ErrorModel
		if errors.As(err, &e) {
			_ = huma.WriteErr(s.api, ctx, e.Status, e.Detail)
			return
		}
		_ = huma.WriteErr(s.api, ctx, http.StatusUnauthorized, err.Error())
		return
	}
	next(ctx)
}

// authorize checks the bearer token in constant time.
func (s *Server) authorize(header string, write bool) error {
	if !write && !s.opts.ReadAuth {
		return nil
	}
	want, err := readToken(s.opts.TokenFile)
	if err != nil {
		return huma.Error401Unauthorized("this endpoint needs a token, and deployd has none: start it with --api-token-file")
	}
	got, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
		return huma.Error401Unauthorized("missing or wrong bearer token: send Authorization: Bearer <the token in deployd's --api-token-file>")
	}
	return nil
}

func readToken(path string) ([]byte, error) {
	if path == "" {
		return nil, os.ErrNotExist
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return nil, os.ErrNotExist
	}
	return []byte(t), nil
}

// entries returns the repo's entries, narrowed to environment when given.
func (s *Server) entries(owner, repo, environment string) ([]view.Entry, error) {
	all := s.deps.View.Entries(owner + "/" + repo)
	if len(all) == 0 {
		return nil, huma.Error404NotFound("repo " + owner + "/" + repo + " is not in deployd's config")
	}
	if environment == "" {
		return all, nil
	}
	for _, e := range all {
		if e.Repo.Environment == environment {
			return []view.Entry{e}, nil
		}
	}
	var envs []string
	for _, e := range all {
		envs = append(envs, e.Repo.Environment)
	}
	return nil, huma.Error404NotFound("repo " + owner + "/" + repo + " has no environment " + environment + "; it has: " + strings.Join(envs, ", "))
}

// one returns the single entry a write acts on; a repo in several environments needs ?environment=.
func (s *Server) one(owner, repo, environment string) (view.Entry, error) {
	es, err := s.entries(owner, repo, environment)
	if err != nil {
		return view.Entry{}, err
	}
	if len(es) > 1 {
		var envs []string
		for _, e := range es {
			envs = append(envs, e.Repo.Environment)
		}
		return view.Entry{}, huma.Error400BadRequest("repo " + owner + "/" + repo + " is deployed to several environments: name one with ?environment= (" + strings.Join(envs, ", ") + ")")
	}
	return es[0], nil
}

func recordOf(r history.Record) Record {
	out := Record{Number: r.Number, Name: r.Name(), Trigger: r.Trigger, Started: r.Started, Ended: r.Ended, Phase: string(r.Phase), Error: r.Error,
		Commit: Commit{SHA: r.Commit.SHA, Message: r.Commit.Message, Author: r.Commit.Author, Time: r.Commit.Time}, Note: r.Note, Images: r.Images}
	if r.GitHub != nil {
		out.GitHubDeploymentID, out.GitHubState = r.GitHub.DeploymentID, r.GitHub.State
	}
	out.Renderer = r.Renderer
	if r.Chart != (history.Chart{}) {
		out.Chart = &Chart{Name: r.Chart.Name, Version: r.Chart.Version}
	}
	if r.Tag != nil {
		out.Tag = &RecordTag{Name: r.Tag.Name, State: r.Tag.State, Error: r.Tag.Error, Attempts: r.Tag.Attempts}
	}
	for _, o := range r.Objects {
		out.Objects = append(out.Objects, ObjectOutcome{Object: o.Object, Action: o.Action, Status: o.Status, Message: o.Message})
	}
	return out
}

// severity orders statuses from healthy to not: the overall status is the worst.
var severity = map[rollout.Status]int{rollout.Current: 0, rollout.InProgress: 1, rollout.Terminating: 2, rollout.Unknown: 3, rollout.NotFound: 4, rollout.Failed: 5}

func (s *Server) environment(e view.Entry, now time.Time) Environment {
	out := Environment{Environment: e.Repo.Environment, Namespace: e.Repo.Namespace, Branch: e.Repo.Branch, Path: e.Repo.ManifestPath(),
		CheckError: e.CheckError, Phase: "none", Paused: e.Pause.Paused, PauseReason: e.Pause.Reason, Rollout: string(rollout.Current), Objects: []Object{}, InSync: true}
	if e.Observed.Commit != "" {
		out.ObservedCommit = &Commit{SHA: e.Observed.Commit, Message: e.Observed.Message, Author: e.Observed.Author, Time: e.Observed.Time}
	}
	if cur, ok := e.Current(); ok {
		rec := recordOf(cur)
		out.Current, out.Phase = &rec, string(cur.Phase)
	}
	if e.Repo.Promotes() {
		p := e.Promotion
		out.Promotion = &PromotionStatus{From: e.Repo.PromoteFrom, Mode: string(e.Repo.Promotion), WaitingCommit: p.Commit, Reason: p.Reason, Ready: p.Ready, Since: p.Since}
	}
	dep, ok := e.Deployed()
	if !ok {
		return out
	}
	out.DeployedCommit = dep.Commit.SHA
	drifted := map[string]*ObjectDrift{}
	if s.deps.Drift != nil {
		st := s.deps.Drift.Repo(e.Repo.Key())
		out.InSync, out.DriftReason = st.InSync, st.Reason
		for _, o := range st.Objects {
			od := &ObjectDrift{Deleted: o.Deleted, Fields: []DriftField{}}
			for _, f := range o.Fields {
				od.Fields = append(od.Fields, DriftField{Path: f.Path, Manager: f.Manager})
			}
			drifted[o.Ref.String()] = od
		}
	}
	worst := rollout.Current
	for _, o := range dep.Objects {
		if o.Kind == "" || o.Action == string(apply.Pruned) || o.Action == string(apply.PruneSkipped) {
			continue
		}
		obj := s.object(o, now)
		obj.Drift = drifted[RefOf(o).String()]
		out.Objects = append(out.Objects, obj)
		if st := rollout.Status(obj.Status); severity[st] > severity[worst] {
			worst = st
		}
	}
	out.Rollout = string(worst)
	return out
}

// RefOf identifies a recorded object.
func RefOf(o history.Object) apply.Ref {
	group, ver, ok := strings.Cut(o.APIVersion, "/")
	if !ok {
		group, ver = "", o.APIVersion
	}
	return apply.Ref{Group: group, Version: ver, Kind: o.Kind, Namespace: o.Namespace, Name: o.Name}
}

func (s *Server) object(o history.Object, now time.Time) Object {
	t := s.deps.Statuses.Get(RefOf(o))
	out := Object{APIVersion: o.APIVersion, Kind: o.Kind, Namespace: o.Namespace, Name: o.Name, Status: string(t.Status), Images: t.Images, Changed: t.Changed}
	if t.Status != rollout.Current {
		out.Message = t.Summary()
	} else {
		out.Message = t.Message
	}
	if r := t.Replicas; r != nil {
		out.Replicas = &Replicas{Desired: r.Desired, Updated: r.Updated, Ready: r.Ready, Available: r.Available}
	}
	if !t.Changed.IsZero() {
		out.AgeSeconds = int64(now.Sub(t.Changed).Seconds())
	}
	return out
}

func sortedEnvs(es []view.Entry) []view.Entry {
	sort.SliceStable(es, func(i, j int) bool { return es[i].Repo.Environment < es[j].Repo.Environment })
	return es
}
