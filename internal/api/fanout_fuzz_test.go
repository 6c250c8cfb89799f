package api

import (
	"fmt"
	"strings"
	"testing"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/view"
)

// FuzzFanout: any sequence of streams opening and closing, deployments and status changes
// being published and clients reading or not keeps the limits: never more streams than
// allowed (in all, per client), never more events queued for a stream than its buffer; a
// dropped stream's queue is closed; a stream gets only the events of the repo it follows;
// nothing panics. Each byte of ops is one step: the low 3 bits say what, the rest which.
func FuzzFanout(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, 2, 3, 4, 1, 0, 5})
	f.Add([]byte{0, 8, 16, 24, 32, 40, 2, 10, 18, 26, 3, 11, 19, 27, 35, 43, 1, 9})
	f.Add([]byte(strings.Repeat("\x00\x02\x0a\x12\x03", 20)))
	const repos = 4
	s := loaded(f, repos, 2)
	statuses := &changingStatuses{message: "first"}
	s.deps.Statuses = statuses
	opts := StreamOptions{Max: 5, PerClient: 3, Buffer: 3}
	f.Fuzz(func(t *testing.T, ops []byte) {
		h := newHub(s, opts.orDefaults())
		h.once.Do(func() {}) // driven here, step by step, instead of by its goroutine
		h.last = map[string]string{}
		h.diffObjects(false)

		type stream struct {
			sb      *sub
			repo    string // the repo followed, "" for all
			release func()
			dropped bool
		}
		var open []*stream
		// read takes what waits for st; it tells whether st's queue is closed.
		read := func(step int, st *stream) bool {
			for {
				select {
				case batch, ok := <-st.sb.ch:
					if !ok {
						return true
					}
					if len(batch) == 0 {
						t.Fatalf("step %d: an empty batch", step)
					}
					for _, msg := range batch {
						if st.repo != "" && !strings.Contains(string(msg), `"repo":"`+st.repo+`"`) {
							t.Fatalf("step %d: a stream of %s got %q", step, st.repo, msg)
						}
					}
				default:
					return false
				}
			}
		}
		number := 1
		for i, op := range ops {
			arg := int(op >> 3)
			switch op % 8 {
			case 0, 5: // open a stream, of every repo or of one
				release, err := h.admit(fmt.Sprint("client", arg%3))
				if err != nil {
					if !isStreamLimit(err) {
						t.Fatalf("step %d: %v", i, err)
					}
					continue
				}
				st := &stream{release: release}
				var match func(config.Key) bool
				if op%8 == 5 {
					st.repo = fmt.Sprintf("team%d/app%d", arg%repos, arg%repos)
					name := st.repo
					match = func(k config.Key) bool { return strings.EqualFold(k.Name, name) }
				}
				st.sb = h.subscribe(match)
				open = append(open, st)
			case 1: // a client goes away
				if len(open) == 0 {
					continue
				}
				j := arg % len(open)
				h.unsubscribe(open[j].sb)
				open[j].release()
				open[j].release() // twice is harmless
				open = append(open[:j], open[j+1:]...)
			case 2: // a deployment changes phase
				number++
				key := config.Key{Name: fmt.Sprintf("team%d/app%d", arg%repos, arg%repos), Environment: "prod"}
				rec := history.Record{Number: number, Phase: history.Applying}
				h.deployment(view.Change{Key: key, Record: &rec})
			case 3: // object statuses change
				statuses.set(fmt.Sprint("message ", i))
				h.diffObjects(true)
			default: // a client reads what waits for it
				if len(open) > 0 {
					st := open[arg%len(open)]
					st.dropped = st.dropped || read(i, st)
				}
			}
			h.mu.Lock()
			admitted, perClient := h.streams, maps(h.perClient)
			subscribed := map[*sub]bool{}
			for sb := range h.subs {
				subscribed[sb] = true
			}
			h.mu.Unlock()
			if admitted > opts.Max || admitted != len(open) {
				t.Fatalf("step %d: %d streams admitted, %d open, limit %d", i, admitted, len(open), opts.Max)
			}
			for c, n := range perClient {
				if n > opts.PerClient {
					t.Fatalf("step %d: %s holds %d streams, limit %d", i, c, n, opts.PerClient)
				}
			}
			for _, st := range open {
				if len(st.sb.ch) > opts.Buffer {
					t.Fatalf("step %d: %d events queued for a stream, buffer %d", i, len(st.sb.ch), opts.Buffer)
				}
				if !subscribed[st.sb] && !st.dropped && !read(i, st) {
					t.Fatalf("step %d: a dropped stream's queue is not closed", i)
				}
				if !subscribed[st.sb] {
					st.dropped = true
				}
			}
		}
	})
}

func maps(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
