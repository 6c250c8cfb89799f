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
type Watcher struct {
	path string
	opts Options

	ready chan struct{}

	mu    sync.Mutex
	state State
	data  []byte
}

// NewWatcher reads the config at path, failing if it is not valid.
func NewWatcher(path string, opts Options) (*Watcher, error) {
	w := &Watcher{path: path, opts: opts, ready: make(chan struct{})}
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
	return w, nil
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
			if r, changed := w.reload(); changed && onReload != nil {
				onReload(r)
			}
			w.watchDirs(fw, watched)
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

// Reload reads the file now; changed is false when its content is what is in force.
func (w *Watcher) reload() (r Reload, changed bool) {
	data, err := os.ReadFile(w.path)
	w.mu.Lock()
	defer w.mu.Unlock()
	r.Previous = w.state.Config
	if err != nil {
		r.Err = fmt.Errorf("reading config: %w", err)
		w.state.Err, w.state.ErrAt = r.Err, time.Now()
		return r, true
	}
	if bytes.Equal(data, w.data) {
		changed = w.state.Err != nil
		w.state.Err = nil
		r.Config = w.state.Config
		return r, changed
	}
	w.data = data
	cfg, err := Parse(w.path, data, w.opts)
	if err != nil {
		r.Err = err
		w.state.Err, w.state.ErrAt = err, time.Now()
		return r, true
	}
	r.Config = cfg
	w.state = State{Config: cfg, LoadedAt: time.Now()}
	return r, true
}

func (w *Watcher) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.state.Err, w.state.ErrAt = err, time.Now()
}
