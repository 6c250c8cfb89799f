package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/view"
)

// StreamOptions bound the event streams (GET /events, GET /deployment/{owner}/{repo}/events),
// which anyone who may read can open and hold.
type StreamOptions struct {
	// Max is how many streams are served at once; more are answered 503.
	Max int
	// PerClient is how many of them one client address may hold (a proxy in front of
	// deployd is one client: raise it there).
	PerClient int
	// Buffer is how many batches of events (a deployment's change, or the object
	// statuses changed in one pass) wait for a stream's client; a client that falls that
	// far behind is dropped (it reconnects and reads the state afresh) instead of being
	// buffered for.
	Buffer int
	// WriteTimeout bounds each write to a client: one that stops reading is dropped.
	WriteTimeout time.Duration
}

// DefaultStreamOptions are the limits deployd runs with.
func DefaultStreamOptions() StreamOptions {
	return StreamOptions{Max: 256, PerClient: 16, Buffer: 64, WriteTimeout: 10 * time.Second}
}

// orDefaults fills the zero fields with DefaultStreamOptions' values.
func (o StreamOptions) orDefaults() StreamOptions {
	d := DefaultStreamOptions()
	if o.Max <= 0 {
		o.Max = d.Max
	}
	if o.PerClient <= 0 {
		o.PerClient = d.PerClient
	}
	if o.Buffer <= 0 {
		o.Buffer = d.Buffer
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = d.WriteTimeout
	}
	return o
}

// objectsEvery is the least time between two passes over the object statuses: a burst
// of status changes (fifty rollouts at once) costs a pass per tenth of a second.
const objectsEvery = 100 * time.Millisecond

// hub encodes each event once and hands the same bytes to every stream that follows it,
// so a change costs one encoding whatever the number of streams, and a stream holds a
// bounded queue of shared messages, not a copy of the state.
type hub struct {
	s    *Server
	opts StreamOptions
	once sync.Once

	mu        sync.Mutex
	subs      map[*sub]struct{}
	streams   int            // admitted, whether subscribed yet or not
	perClient map[string]int // client address → streams admitted

	last map[string]string // object → status and message last published (run's goroutine only)
}

// sub is one stream's subscription.
type sub struct {
	// match tells the keys followed; nil follows every key.
	match func(config.Key) bool
	// ch carries batches of encoded SSE messages; it is closed when the stream is dropped.
	ch chan [][]byte
}

// keyed is an encoded event of a repo and environment.
type keyed struct {
	key config.Key
	msg []byte
}

// errStreams says a stream limit was reached.
type errStreams struct{ msg string }

func (e errStreams) Error() string { return e.msg }

func newHub(s *Server, opts StreamOptions) *hub {
	return &hub{s: s, opts: opts, subs: map[*sub]struct{}{}, perClient: map[string]int{}}
}

// admit counts a new stream of client against the limits; release gives its place back.
func (h *hub) admit(client string) (release func(), err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.streams >= h.opts.Max:
		return nil, errStreams{fmt.Sprintf("deployd serves %d event streams already, its limit (--api-max-streams): try again later", h.opts.Max)}
	case h.perClient[client] >= h.opts.PerClient:
		return nil, errStreams{fmt.Sprintf("this client holds %d event streams already, the limit per client (--api-max-streams-per-client): close one; GET /events follows every repo", h.opts.PerClient)}
	}
	h.streams++
	h.perClient[client]++
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.streams--
			if h.perClient[client]--; h.perClient[client] <= 0 {
				delete(h.perClient, client)
			}
		})
	}, nil
}

// subscribe starts following the changes of the keys match accepts (every key if nil).
func (h *hub) subscribe(match func(config.Key) bool) *sub {
	h.once.Do(h.start)
	sb := &sub{match: match, ch: make(chan [][]byte, max(h.opts.Buffer, 1))}
	h.mu.Lock()
	h.subs[sb] = struct{}{}
	h.mu.Unlock()
	return sb
}

// unsubscribe ends sb; it may have been dropped already.
func (h *hub) unsubscribe(sb *sub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[sb]; ok {
		delete(h.subs, sb)
		close(sb.ch)
	}
}

// publish hands the batch's events to every stream following their keys, as one item of
// its queue, never waiting: a stream whose queue is full is dropped. Streams of every key
// share one slice.
func (h *hub) publish(batch []keyed) {
	if len(batch) == 0 {
		return
	}
	all := make([][]byte, len(batch))
	for i, k := range batch {
		all[i] = k.msg
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for sb := range h.subs {
		mine := all
		if sb.match != nil {
			mine = nil
			for _, k := range batch {
				if sb.match(k.key) {
					mine = append(mine, k.msg)
				}
			}
			if mine == nil {
				continue
			}
		}
		select {
		case sb.ch <- mine:
		default:
			delete(h.subs, sb)
			close(sb.ch)
		}
	}
}

// start takes the object statuses as they are now, then follows the changes until the
// server closes its streams.
func (h *hub) start() {
	changes, cancel := h.s.deps.View.Subscribe(1024)
	statusChanged := h.s.deps.Statuses.Changed()
	h.last = map[string]string{}
	h.diffObjects(false)
	go func() {
		defer cancel()
		h.run(changes, statusChanged)
	}()
}

func (h *hub) run(changes <-chan view.Change, statusChanged <-chan struct{}) {
	var wait <-chan time.Time // set while a pass over the statuses is held back
	for {
		select {
		case <-h.s.closing:
			return
		case c := <-changes:
			h.deployment(c)
		case <-statusChanged:
			statusChanged = nil
			wait = time.After(objectsEvery)
		case <-wait:
			wait, statusChanged = nil, h.s.deps.Statuses.Changed()
			h.diffObjects(true)
		}
	}
}

// deployment publishes a record's change.
func (h *hub) deployment(c view.Change) {
	if c.Record == nil {
		return
	}
	e, ok := h.s.deps.View.Entry(c.Key)
	if !ok {
		return
	}
	msg, err := message("deployment", DeploymentEvent{Repo: e.Repo.Name, Environment: c.Key.Environment, Record: recordOf(*c.Record)})
	if err == nil {
		h.publish([]keyed{{c.Key, msg}})
	}
}

// diffObjects publishes an event for each object whose status changed since the last
// pass (when publish is set), and forgets objects no longer deployed.
func (h *hub) diffObjects(publish bool) {
	now := time.Now()
	var batch []keyed
	seen := make(map[string]string, len(h.last))
	for _, e := range h.s.deps.View.Entries("") {
		for _, o := range h.s.environment(e, now).Objects {
			k, v := objectKey(e, o), sentKey(o)
			seen[k] = v
			if prev, ok := h.last[k]; !publish || (ok && prev == v) {
				continue
			}
			if msg, err := message("object", ObjectEvent{Repo: e.Repo.Name, Environment: e.Repo.Environment, Object: o}); err == nil {
				batch = append(batch, keyed{e.Repo.Key(), msg})
			}
		}
	}
	h.last = seen
	h.publish(batch)
}

// message encodes one SSE message.
func message(event string, data any) ([]byte, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "event: %s\ndata: %s\n\n", event, b), nil
}

// isStreamLimit tells whether err is a stream limit reached.
func isStreamLimit(err error) bool {
	var e errStreams
	return errors.As(err, &e)
}

// sentKey is what an object event tells: a change of it sends one (its status, or its drift).
func sentKey(o Object) string {
	k := o.Status + "\x00" + o.Message
	if o.Drift != nil {
		k += fmt.Sprintf("\x00%v", *o.Drift)
	}
	return k
}
