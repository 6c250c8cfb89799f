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
		entries, err := s.entries(in.Owner, in.Repo, in.Environment)
		if err != nil {
			return nil, err
		}
		return &huma.StreamResponse{Body: func(hctx huma.Context) {
			hctx.SetHeader("Content-Type", "text/event-stream")
			hctx.SetHeader("Cache-Control", "no-cache")
			_, w := humago.Unwrap(hctx)
			rc := http.NewResponseController(w)
			_ = rc.SetWriteDeadline(time.Time{}) // a stream outlives the server's write timeout
			hctx.SetStatus(http.StatusOK)
			_ = rc.Flush() // headers now: the client knows the stream is open before the first event
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
			s.events(hctx.Context(), in, entries, send)
		}}, nil
	})
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

// events streams the repo's changes until ctx ends or a write fails.
func (s *Server) events(ctx context.Context, in *eventsInput, entries []view.Entry, send sender) {
	keys := map[string]bool{}
	last := map[string]string{} // object → status+message last sent
	for _, e := range entries {
		keys[e.Repo.Key().String()] = true
		for _, o := range s.environment(e, time.Now()).Objects {
			last[e.Repo.Environment+"/"+o.Kind+"/"+o.Namespace+"/"+o.Name] = o.Status + o.Message
		}
	}
	changes, cancel := s.deps.View.Subscribe()
	defer cancel()
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
			if !keys[c.Key.String()] || c.Record == nil {
				continue
			}
			if send("deployment", DeploymentEvent{Repo: entries[0].Repo.Name, Environment: c.Key.Environment, Record: recordOf(*c.Record)}) != nil {
				return
			}
		case <-statusChanged:
			if !s.sendObjects(in, last, send) {
				return
			}
		case now := <-tick.C:
			if send("keepalive", KeepaliveEvent{Time: now.UTC()}) != nil {
				return
			}
		}
	}
}

// sendObjects sends an event for each of the repo's objects whose status changed.
func (s *Server) sendObjects(in *eventsInput, last map[string]string, send sender) bool {
	entries, err := s.entries(in.Owner, in.Repo, in.Environment)
	if err != nil {
		return false
	}
	now := time.Now()
	for _, e := range entries {
		for _, o := range s.environment(e, now).Objects {
			k := e.Repo.Environment + "/" + o.Kind + "/" + o.Namespace + "/" + o.Name
			if last[k] == o.Status+o.Message {
				continue
			}
			last[k] = o.Status + o.Message
			if send("object", ObjectEvent{Repo: e.Repo.Name, Environment: e.Repo.Environment, Object: o}) != nil {
				return false
			}
		}
	}
	return true
}
