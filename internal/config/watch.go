package config

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// settle is how long the watcher waits after the last file event before reloading,
// so an editor's write-rename-chmod or a ConfigMap's symlink swap is read once, whole.
const settle = 100 * time.Millisecond

// State is what the watcher knows: the config in force and the last reload's outcome.
type State struct {
	// Config is the last valid config; it stays in force when a reload fails.
	Config *Config
	// LoadedAt is when Config was read.
	LoadedAt time.Time
	// Err is the last reload's error, nil when the newest file content is in force.
	Err error
	// ErrAt is when Err happened.
	ErrAt time.Time
}

// Reload is the outcome of reading a changed file.
type Reload struct {
	// Previous is the config that was in force before.
	Previous *Config
	// Config is the new config, nil when the reload failed.
	Config *Config
	// Err says why the reload failed; the previous config stays in force.
	Err error
}

// Watcher holds the current config and reloads it when its file changes: an in-place
// write, an editor's replace-by-rename, or a Kubernetes ConfigMap volume's ..data swap.
// Other sources (a ConfigMap watched through the API) Offer their content too: each
// source's change is validated the same way, and the newest change wins.
type Watcher struct {
	path string
	opts Options

	ready chan struct{}
	// offered wakes Run when Offer left content in pending.
	offered chan struct{}

	mu    sync.Mutex
	state State
	data  []byte
	// seen is each source's last content: a source that did not change (the file still
	// showing what a ConfigMap's watch already brought) does not undo a newer change.
	seen    map[string][]byte
	pending map[string]offer
}

// offer is a source's newest content, or why it has none.
type offer struct {
	data []byte
	err  error
}

// NewWatcher reads the config at path, failing if it is not valid.
func NewWatcher(path string, opts Options) (*Watcher, error) {
	w := &Watcher{path: path, opts: opts, ready: make(chan struct{}), offered: make(chan struct{}, 1), pending: map[string]offer{}}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cfg, err := Parse(path, data, opts)
	if err != nil {
		return nil, err
	}
	w.state = State{Config: cfg, LoadedAt: time.Now()}
	w.data = data
	w.seen = map[string][]byte{path: data}
	return w, nil
}

// Offer gives the watcher a source's content (name is how errors cite it, e.g.
// "configmap deployd/deployd-repos, repos.yaml"), or err when the source has none (the
// ConfigMap was deleted): Run validates it like the file's and, when it differs from
// what the source offered last, puts it in force or refuses it, keeping the last good
// config. Offer does not block; a newer offer from the same source replaces one not
// yet read.
func (w *Watcher) Offer(name string, data []byte, err error) {
	w.mu.Lock()
	w.pending[name] = offer{data: data, err: err}
	w.mu.Unlock()
	select {
	case w.offered <- struct{}{}:
	default:
	}
}

// State returns the config in force and the last reload's outcome.
func (w *Watcher) State() State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state
}

// Watching is closed once Run has its file watches in place.
func (w *Watcher) Watching() <-chan struct{} { return w.ready }

// Run watches the file until ctx ends, calling onReload (from Run's goroutine) after
// each reload whose file content changed.
func (w *Watcher) Run(ctx context.Context, onReload func(Reload)) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", w.path, err)
	}
	defer fw.Close()
	watched := map[string]bool{}
	w.watchDirs(fw, watched)
	if len(watched) == 0 {
		return fmt.Errorf("watching %s: cannot watch its directory", w.path)
	}
	close(w.ready)

	// A change between NewWatcher's read and the watches above sent no event (a Pod's
	// ConfigMap volume updated as its container starts): read the file once more now.
	timer := time.NewTimer(0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-fw.Events:
			if !ok {
				return nil
			}
			timer.Reset(settle)
		case err, ok := <-fw.Errors:
			if !ok {
				return nil
			}
			w.fail(fmt.Errorf("watching %s: %w", w.path, err))
		case <-timer.C:
			data, err := os.ReadFile(w.path)
			if r, changed := w.take(w.path, data, err); changed && onReload != nil {
				onReload(r)
			}
			w.watchDirs(fw, watched)
		case <-w.offered:
			w.mu.Lock()
			pending := w.pending
			w.pending = map[string]offer{}
			w.mu.Unlock()
			for name, o := range pending {
				if r, changed := w.take(name, o.data, o.err); changed && onReload != nil {
					onReload(r)
				}
			}
		}
	}
}

// watchDirs watches the file's directory and, when the file is a symlink into another
// directory, that one too (a file linked from elsewhere changes there).
func (w *Watcher) watchDirs(fw *fsnotify.Watcher, watched map[string]bool) {
	dirs := []string{filepath.Dir(w.path)}
	if real, err := filepath.EvalSymlinks(w.path); err == nil {
		dirs = append(dirs, filepath.Dir(real))
	}
	for _, d := range dirs {
		abs, err := filepath.Abs(d)
		if err != nil || watched[abs] {
			continue
		}
		if err := fw.Add(abs); err == nil {
			watched[abs] = true
		}
	}
}

// take validates a source's content and puts it in force; changed is false when
// nothing changed: the source offers what it offered last, or what is in force.
func (w *Watcher) take(name string, data []byte, readErr error) (r Reload, changed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r.Previous = w.state.Config
	if readErr != nil {
		delete(w.seen, name) // the source's next content is a change, whatever it is
		r.Err = fmt.Errorf("reading config: %w", readErr)
		w.state.Err, w.state.ErrAt = r.Err, time.Now()
		return r, true
	}
	if last, ok := w.seen[name]; ok && bytes.Equal(data, last) {
		r.Config = w.state.Config
		return r, false
	}
	w.seen[name] = data
	if bytes.Equal(data, w.data) {
		changed = w.state.Err != nil
		w.state.Err = nil
		r.Config = w.state.Config
		return r, changed
	}
	cfg, err := Parse(name, data, w.opts)
	if err != nil {
		r.Err = err
		w.state.Err, w.state.ErrAt = err, time.Now()
		return r, true
	}
	w.data = data
	r.Config = cfg
	w.state = State{Config: cfg, LoadedAt: time.Now()}
	return r, true
}

func (w *Watcher) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.state.Err, w.state.ErrAt = err, time.Now()
}
