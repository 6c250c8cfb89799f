package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/view"
)

// DeploymentEvent is a deployment record that changed phase.
type DeploymentEvent struct {
	Repo        string `json:"repo" doc:"owner/repo."`
	Environment string `json:"environment" doc:"The environment."`
	Record      Record `json:"record" doc:"The record, as it is now."`
}

// ObjectEvent is an object whose rollout status changed.
type ObjectEvent struct {
	Repo        string `json:"repo" doc:"owner/repo."`
	Environment string `json:"environment" doc:"The environment."`
	Object      Object `json:"object" doc:"The object, as it is now."`
}

// KeepaliveEvent is sent when nothing happened for a while, so proxies keep the stream open.
type KeepaliveEvent struct {
	Time time.Time `json:"time" doc:"The server's time."`
}

type eventsInput struct {
	RepoPath
	Environment string `query:"environment" maxLength:"63" doc:"Only this environment."`
}

// keepalive is how often an idle stream gets a keepalive event.
var keepalive = 15 * time.Second

var eventTypes = map[string]any{"deployment": DeploymentEvent{}, "object": ObjectEvent{}, "keepalive": KeepaliveEvent{}}

// allEventsInput is the input of the all-repos stream.
type allEventsInput struct {
	Authorization string `header:"Authorization" doc:"Bearer token, when deployd runs with --api-read-auth."`
}

func (s *Server) registerEvents() {
	op := huma.Operation{OperationID: "events", Method: http.MethodGet, Path: "/deployment/{owner}/{repo}/events",
		Summary:     "Follow a repo",
		Description: "Server-Sent Events: a `deployment` event at every phase change of the repo's deployments, an `object` event at every rollout status change of its objects, and a `keepalive` event when idle, until the client goes away.",
		Tags:        []string{"deployments"}, Errors: readErrors,
		Responses: map[string]*huma.Response{"200": {Description: "The event stream.", Content: map[string]*huma.MediaType{
			"text/event-stream": {Schema: s.eventSchema()},
		}}},
	}
	huma.Register(s.api, op, func(ctx context.Context, in *eventsInput) (*huma.StreamResponse, error) {
		if err := s.authorize(in.Authorization, false); err != nil {
			return nil, err
		}
		if _, err := s.entries(in.Owner, in.Repo, in.Environment); err != nil {
			return nil, err
		}
		return s.stream(func() ([]view.Entry, error) { return s.entries(in.Owner, in.Repo, in.Environment) }, false), nil
	})
	// One stream for every repo: a browser page showing them all would otherwise need a
	// connection per repo, and browsers allow about six per host.
	all := huma.Operation{OperationID: "all-events", Method: http.MethodGet, Path: "/events",
		Summary:     "Follow every repo",
		Description: "Server-Sent Events of every repo and environment, including repos a config reload adds: the same `deployment`, `object` and `keepalive` events as a repo's stream. The dashboard follows this one.",
		Tags:        []string{"deployments"}, Errors: []int{http.StatusUnauthorized},
		Responses: map[string]*huma.Response{"200": {Description: "The event stream.", Content: map[string]*huma.MediaType{
			"text/event-stream": {Schema: s.eventSchema()},
		}}},
	}
	huma.Register(s.api, all, func(ctx context.Context, in *allEventsInput) (*huma.StreamResponse, error) {
		if err := s.authorize(in.Authorization, false); err != nil {
			return nil, err
		}
		return s.stream(func() ([]view.Entry, error) { return s.deps.View.Entries(""), nil }, true), nil
	})
}

// scope returns the entries a stream follows, looked up afresh at each status change.
type scope func() ([]view.Entry, error)

// stream answers with an SSE stream of the changes in scope; all also follows repos that
// join the config while it runs.
func (s *Server) stream(sc scope, all bool) *huma.StreamResponse {
	return &huma.StreamResponse{Body: func(hctx huma.Context) {
		hctx.SetHeader("Content-Type", "text/event-stream")
		hctx.SetHeader("Cache-Control", "no-cache")
		_, w := humago.Unwrap(hctx)
		rc := http.NewResponseController(w)
		_ = rc.SetWriteDeadline(time.Time{}) // a stream outlives the server's write timeout
		// Subscribe before the headers go out: a client that sees the stream open and then
		// reads the state misses no change in between.
		changes, cancel := s.deps.View.Subscribe()
		defer cancel()
		hctx.SetStatus(http.StatusOK)
		_ = rc.Flush()
		send := func(event string, data any) error {
			b, err := json.Marshal(data)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
				return err
			}
			return rc.Flush()
		}
		s.events(hctx.Context(), sc, all, changes, send)
	}}
}

// eventSchema documents the stream: each message is one of the event types.
func (s *Server) eventSchema() *huma.Schema {
	reg := s.api.OpenAPI().Components.Schemas
	var oneOf []*huma.Schema
	for _, name := range []string{"deployment", "keepalive", "object"} {
		oneOf = append(oneOf, &huma.Schema{Title: "Event " + name, Type: huma.TypeObject, Required: []string{"event", "data"},
			Properties: map[string]*huma.Schema{
				"event": {Type: huma.TypeString, Enum: []any{name}, Description: "The event name."},
				"data":  reg.Schema(reflect.TypeOf(eventTypes[name]), true, name),
			}})
	}
	return &huma.Schema{Title: "Server-Sent Events", Type: huma.TypeArray, Description: "Each item is one SSE message: an event line and a JSON data line.",
		Items: &huma.Schema{OneOf: oneOf}}
}

// sender writes one SSE message.
type sender func(event string, data any) error

// events streams the changes in scope until ctx ends or a write fails.
func (s *Server) events(ctx context.Context, sc scope, all bool, changes <-chan view.Change, send sender) {
	names := map[config.Key]string{} // key → repo name as configured
	last := map[string]string{}      // object → status+message last sent
	entries, _ := sc()
	for _, e := range entries {
		names[e.Repo.Key()] = e.Repo.Name
		for _, o := range s.environment(e, time.Now()).Objects {
			last[objectKey(e, o)] = sentKey(o)
		}
	}
	tick := time.NewTicker(keepalive)
	defer tick.Stop()
	for {
		statusChanged := s.deps.Statuses.Changed()
		select {
		case <-ctx.Done():
			return
		case <-s.closing:
			return // deployd is shutting down; clients reconnect to the next one
		case c := <-changes:
			name, ok := names[c.Key]
			if !ok && all {
				if e, found := s.deps.View.Entry(c.Key); found {
					name, ok = e.Repo.Name, true
					names[c.Key] = name
				}
			}
			if !ok || c.Record == nil {
				continue
			}
			if send("deployment", DeploymentEvent{Repo: name, Environment: c.Key.Environment, Record: recordOf(*c.Record)}) != nil {
				return
			}
		case <-statusChanged:
			if !s.sendObjects(sc, last, send) {
				return
			}
		case now := <-tick.C:
			if send("keepalive", KeepaliveEvent{Time: now.UTC()}) != nil {
				return
			}
		}
	}
}

func objectKey(e view.Entry, o Object) string {
	return e.Repo.Name + "@" + e.Repo.Environment + "/" + o.Kind + "/" + o.Namespace + "/" + o.Name
}

// sentKey is what an object event tells: a change of it sends one (its status, or its drift).
func sentKey(o Object) string {
	k := o.Status + "\x00" + o.Message
	if o.Drift != nil {
		k += fmt.Sprintf("\x00%v", *o.Drift)
	}
	return k
}

// sendObjects sends an event for each object in scope whose status changed.
func (s *Server) sendObjects(sc scope, last map[string]string, send sender) bool {
	entries, err := sc()
	if err != nil {
		return false
	}
	now := time.Now()
	for _, e := range entries {
		for _, o := range s.environment(e, now).Objects {
			k := objectKey(e, o)
			if last[k] == sentKey(o) {
				continue
			}
			last[k] = sentKey(o)
			if send("object", ObjectEvent{Repo: e.Repo.Name, Environment: e.Repo.Environment, Object: o}) != nil {
				return false
			}
		}
	}
	return true
}
