package webhook

import (
	"sync"
	"time"
)

// recent remembers keys (delivery ids, GitHub deployment ids) for a while, at most max
// of them: the oldest is forgotten first, so a flood of deliveries costs a bounded map.
type recent struct {
	ttl time.Duration
	max int

	mu   sync.Mutex
	at   map[string]time.Time
	ring []remembered // insertion order; ring[head] is the oldest once full
	head int
}

type remembered struct {
	key string
	at  time.Time
}

// newRecent makes an empty memory of at most max keys. It grows with use: a deployd
// that gets few deliveries does not hold room for max (1.3 MB at the default).
func newRecent(max int, ttl time.Duration) *recent {
	return &recent{ttl: ttl, max: max, at: map[string]time.Time{}}
}

// claim remembers key and tells whether it was new: false when it was claimed within
// ttl and not released since.
func (r *recent) claim(key string, now time.Time) bool {
	if r.max <= 0 {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if at, ok := r.at[key]; ok && now.Sub(at) < r.ttl {
		return false
	}
	if len(r.ring) == r.max {
		old := r.ring[r.head]
		if at, ok := r.at[old.key]; ok && at.Equal(old.at) {
			delete(r.at, old.key)
		}
		r.ring[r.head] = remembered{key, now}
		r.head = (r.head + 1) % r.max
	} else {
		r.ring = append(r.ring, remembered{key, now})
	}
	r.at[key] = now
	return true
}

// release forgets key, so the same delivery is taken when GitHub sends it again.
func (r *recent) release(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.at, key)
}

// len is how many keys are remembered.
func (r *recent) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.at)
}
