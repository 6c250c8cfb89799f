package api

import (
	"context"
	"net/http"
	"reflect"
	"strings"
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
		Description: "Server-Sent Events: a `deployment` event at every phase change of the repo's deployments, an `object` event at every rollout status change of its objects, and a `keepalive` event when idle, until the client goes away. Streams are limited in number (in all and per client address: 503 over the limit), and a client that stops reading is dropped: reconnect and read the state afresh.",
		Tags:        []string{"deployments"}, Errors: append(readErrors, http.StatusServiceUnavailable),
		Responses: map[string]*huma.Response{"200": {Description: "The event stream.", Content: map[string]*huma.MediaType{
			"text/event-stream": {Schema: s.eventSchema()},
		}}},
	}
	huma.Register(s.api, op, func(ctx context.Context, in *eventsInput) (*huma.StreamResponse, error) {
		if _, err := s.entries(in.Owner, in.Repo, in.Environment); err != nil {
			return nil, err
		}
		name := in.Owner + "/" + in.Repo
		return s.stream(func(k config.Key) bool {
			return strings.EqualFold(k.Name, name) && (in.Environment == "" || k.Environment == in.Environment)
		}), nil
	})
	// One stream for every repo: a browser page showing them all would otherwise need a
	// connection per repo, and browsers allow about six per host.
	all := huma.Operation{OperationID: "all-events", Method: http.MethodGet, Path: "/events",
		Summary:     "Follow every repo",
		Description: "Server-Sent Events of every repo and environment, including repos a config reload adds: the same `deployment`, `object` and `keepalive` events as a repo's stream. The dashboard follows this one. Limited and dropped like a repo's stream.",
		Tags:        []string{"deployments"}, Errors: []int{http.StatusUnauthorized, http.StatusServiceUnavailable},
		Responses: map[string]*huma.Response{"200": {Description: "The event stream.", Content: map[string]*huma.MediaType{
			"text/event-stream": {Schema: s.eventSchema()},
		}}},
	}
	huma.Register(s.api, all, func(ctx context.Context, in *allEventsInput) (*huma.StreamResponse, error) {
		return s.stream(nil), nil
	})
}

// stream answers with an SSE stream of the changes of the keys match accepts, until the
// client goes away, falls behind (its queue of events is full, or a write takes over the
// write timeout) or deployd shuts down. Handler has admitted it against the limits.
func (s *Server) stream(match func(config.Key) bool) *huma.StreamResponse {
	return &huma.StreamResponse{Body: func(hctx huma.Context) {
		hctx.SetHeader("Content-Type", "text/event-stream")
		hctx.SetHeader("Cache-Control", "no-cache")
		_, w := humago.Unwrap(hctx)
		rc := http.NewResponseController(w)
		write := func(msgs ...[]byte) error {
			_ = rc.SetWriteDeadline(time.Now().Add(s.opts.Streams.WriteTimeout))
			for _, msg := range msgs {
				if _, err := w.Write(msg); err != nil {
					return err
				}
			}
			return rc.Flush()
		}
		// Subscribe before the headers go out: a client that sees the stream open and then
		// reads the state misses no change in between.
		sb := s.hub.subscribe(match)
		defer s.hub.unsubscribe(sb)
		hctx.SetStatus(http.StatusOK)
		if write() != nil {
			return
		}
		tick := time.NewTicker(keepalive)
		defer tick.Stop()
		ctx := hctx.Context()
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.closing:
				return // deployd is shutting down; clients reconnect to the next one
			case batch, ok := <-sb.ch:
				if !ok || write(batch...) != nil {
					return // dropped for falling behind, or gone
				}
			case now := <-tick.C:
				msg, _ := message("keepalive", KeepaliveEvent{Time: now.UTC()})
				if write(msg) != nil {
					return
				}
			}
		}
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

func objectKey(e view.Entry, o Object) string {
	return e.Repo.Name + "@" + e.Repo.Environment + "/" + o.Kind + "/" + o.Namespace + "/" + o.Name
}
