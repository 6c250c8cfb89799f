// Package view keeps in memory what the API serves, per repo and environment: its
// config, the head commit last seen, its deployment records and pause state. The
// controller and the deployment runner feed it; the API only reads it.
package view

import (
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/source"
)

// Pause says a repo is paused: watched, but not deployed.
type Pause struct {
	Paused bool      `json:"paused"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since,omitzero"`
}

// Entry is what is known of one repo and environment.
type Entry struct {
	Repo config.Repo
	// Observed is the branch head last seen, zero before the first check.
	Observed source.Revision
	// ObservedAt is when it was seen.
	ObservedAt time.Time
	// CheckError is the last check's error, empty when it succeeded.
	CheckError string
	// Records are the deployments, newest first.
	Records []history.Record
	// Pause is the pause state.
	Pause Pause
	// Promotion is the commit waiting to be promoted, for an entry with promoteFrom.
	Promotion Promotion
	// Version grows at every change of the entry: readers may keep what they built
	// from it while it stays the same.
	Version uint64
}

// Current is the newest record, if any.
func (e Entry) Current() (history.Record, bool) {
	if len(e.Records) == 0 {
		return history.Record{}, false
	}
	return e.Records[0], true
}

// Deployed is the newest record that applied objects and did not end in error:
// what is running.
func (e Entry) Deployed() (history.Record, bool) {
	for _, r := range e.Records {
		switch r.Phase {
		case history.Succeeded, history.Failed, history.Waiting, history.Superseded:
			return r, true
		}
	}
	return history.Record{}, false
}

// Change tells subscribers a repo's entry changed.
type Change struct {
	Key config.Key
	// Record is the record that changed, when one did.
	Record *history.Record
}

// View is the in-memory state.
type View struct {
	limit int

	mu      sync.RWMutex
	cfg     *config.Config
	entries map[config.Key]*Entry
	byName  map[string][]config.Key // lower-case name → its keys, in config order
	subs    map[int]chan Change
	nextSub int
}

// New returns a view keeping up to limit records per repo and environment.
func New(limit int) *View {
	return &View{limit: limit, entries: map[config.Key]*Entry{}, subs: map[int]chan Change{}}
}

// SetConfig makes cfg current; entries of removed repos are dropped.
func (v *View) SetConfig(cfg *config.Config) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.cfg = cfg
	keep := map[config.Key]bool{}
	v.byName = map[string][]config.Key{}
	for _, r := range cfg.Repos {
		keep[r.Key()] = true
		name := strings.ToLower(r.Name)
		v.byName[name] = append(v.byName[name], r.Key())
		e := v.entries[r.Key()]
		if e == nil {
			e = &Entry{}
			v.entries[r.Key()] = e
		}
		e.Repo = r
		e.Version++
	}
	for k := range v.entries {
		if !keep[k] {
			delete(v.entries, k)
		}
	}
}

// Config returns the config in force.
func (v *View) Config() *config.Config {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.cfg
}

// Observe records a check's outcome.
func (v *View) Observe(key config.Key, rev source.Revision, err error) {
	v.update(key, nil, func(e *Entry) {
		if err != nil {
			e.CheckError = err.Error()
			return
		}
		e.Observed, e.ObservedAt, e.CheckError = rev, time.Now().UTC(), ""
	})
}

// LoadHistory sets a repo's records (newest first), as read at start.
func (v *View) LoadHistory(key config.Key, recs []history.Record) {
	v.update(key, nil, func(e *Entry) { e.Records = append([]history.Record(nil), recs...) })
}

// Record inserts or replaces a record.
func (v *View) Record(key config.Key, rec history.Record) {
	rec = rec.Clone()
	v.update(key, &rec, func(e *Entry) {
		// Copy on write: readers hold the old slice.
		recs := append(make([]history.Record, 0, len(e.Records)+1), e.Records...)
		for i := range recs {
			if recs[i].Number == rec.Number {
				if rec.GitHub == nil {
					rec.GitHub = recs[i].GitHub // the reporter's news is kept apart from the runner's
				}
				if rec.Tag == nil {
					rec.Tag = recs[i].Tag // so is the tagger's
				}
				recs[i] = rec
				e.Records = recs
				return
			}
		}
		recs = append(recs, rec)
		sort.Slice(recs, func(i, j int) bool { return recs[i].Number > recs[j].Number })
		if len(recs) > v.limit {
			recs = recs[:v.limit]
		}
		e.Records = recs
	})
}

// SetPause records the pause state.
func (v *View) SetPause(key config.Key, p Pause) {
	v.update(key, nil, func(e *Entry) { e.Pause = p })
}

func (v *View) update(key config.Key, rec *history.Record, f func(*Entry)) {
	v.mu.Lock()
	e := v.entries[key]
	if e == nil {
		v.mu.Unlock()
		return
	}
	f(e)
	e.Version++
	subs := make([]chan Change, 0, len(v.subs))
	for _, ch := range v.subs {
		subs = append(subs, ch)
	}
	v.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- Change{Key: key, Record: rec}:
		default: // a slow subscriber misses a change, never blocks deployd
		}
	}
}

// Entry returns a copy of the entry for key.
func (v *View) Entry(key config.Key) (Entry, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	e, ok := v.entries[key]
	if !ok {
		return Entry{}, false
	}
	return *e, true
}

// Entries returns copies of the entries whose repo name is name (any environment),
// or of every entry when name is empty, in config order.
func (v *View) Entries(name string) []Entry {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []Entry
	if v.cfg == nil {
		return nil
	}
	if name != "" {
		for _, k := range v.byName[strings.ToLower(name)] {
			if e, ok := v.entries[k]; ok {
				out = append(out, *e)
			}
		}
		return out
	}
	for _, r := range v.cfg.Repos {
		if e, ok := v.entries[r.Key()]; ok {
			out = append(out, *e)
		}
	}
	return out
}

// Versions appends to dst the versions of the entries Entries(name) returns (only the
// one of environment env, when env is set), without copying the entries: a reader
// holding what it built from them can tell whether it still holds. ok is false when
// there are none.
func (v *View) Versions(name, env string, dst []uint64) (versions []uint64, ok bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.cfg == nil {
		return dst, false
	}
	n := len(dst)
	for _, k := range v.byName[strings.ToLower(name)] {
		if e, found := v.entries[k]; found && (env == "" || e.Repo.Environment == env) {
			dst = append(dst, e.Version)
			if env != "" {
				break
			}
		}
	}
	return dst, len(dst) > n
}

// Subscribe returns a channel of changes until cancel is called; it holds up to buffer
// changes, and a subscriber that lets it fill misses the next ones.
func (v *View) Subscribe(buffer int) (<-chan Change, func()) {
	v.mu.Lock()
	defer v.mu.Unlock()
	id := v.nextSub
	v.nextSub++
	ch := make(chan Change, buffer)
	v.subs[id] = ch
	return ch, func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		delete(v.subs, id)
	}
}

// SetGitHub records the GitHub deployment a record is reported on.
func (v *View) SetGitHub(key config.Key, number int, g history.GitHub) {
	v.update(key, nil, func(e *Entry) {
		recs := append([]history.Record(nil), e.Records...)
		for i := range recs {
			if recs[i].Number == number {
				gg := g
				recs[i].GitHub = &gg
			}
		}
		e.Records = recs
	})
}

// SetTag records where a record's git tag is.
func (v *View) SetTag(key config.Key, number int, t history.Tag) {
	v.update(key, nil, func(e *Entry) {
		recs := append([]history.Record(nil), e.Records...)
		for i := range recs {
			if recs[i].Number == number {
				tt := t
				recs[i].Tag = &tt
			}
		}
		e.Records = recs
	})
}

// Subscribers is the number of open subscriptions (event streams being served).
func (v *View) Subscribers() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.subs)
}

// Promotion is the commit waiting to be promoted to an entry with promoteFrom.
type Promotion struct {
	// Commit is its SHA; empty when nothing waits.
	Commit string `json:"commit,omitempty"`
	// Reason says what it waits for.
	Reason string `json:"reason,omitempty"`
	// Ready is set when the source environment succeeded with it.
	Ready bool `json:"ready,omitempty"`
	// Since is when it started waiting.
	Since time.Time `json:"since,omitzero"`
}

// SetPromotion records the commit waiting to be promoted (zero: none).
func (v *View) SetPromotion(key config.Key, p Promotion) {
	v.update(key, nil, func(e *Entry) { e.Promotion = p })
}
