package config

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// reloadWithin is the promise: a change takes effect within 2 seconds.
const reloadWithin = 2 * time.Second

func repoYAML(names ...string) string {
	var b strings.Builder
	b.WriteString("repos:\n")
	for _, n := range names {
		b.WriteString("  - {name: " + n + ", url: 'https://h/" + n + "', namespace: ns}\n")
	}
	return b.String()
}

// startWatcher watches path and returns a channel of its reloads.
func startWatcher(t *testing.T, path string) (*Watcher, <-chan Reload) {
	t.Helper()
	w, err := NewWatcher(path, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reloads := make(chan Reload, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx, func(r Reload) { reloads <- r }); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w, reloads
}

func waitReload(t *testing.T, reloads <-chan Reload, wantRepos ...string) Reload {
	t.Helper()
	deadline := time.After(reloadWithin)
	for {
		select {
		case r := <-reloads:
			if r.Config != nil && names(r.Config) == strings.Join(wantRepos, ",") {
				return r
			}
		case <-deadline:
			t.Fatalf("no reload with repos %v within %v", wantRepos, reloadWithin)
		}
	}
}

func names(c *Config) string {
	var out []string
	for _, r := range c.Repos {
		out = append(out, r.Name)
	}
	return strings.Join(out, ",")
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// eventually makes a change and waits for the reload that shows it.
func eventually(t *testing.T, reloads <-chan Reload, change func(), want ...string) Reload {
	t.Helper()
	change()
	return waitReload(t, reloads, want...)
}

func TestReloadAfterInPlaceWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "repos.yaml")
	write(t, path, repoYAML("a/one"))
	w, reloads := startWatcher(t, path)
	waitWatching(t, w)

	r := eventually(t, reloads, func() { write(t, path, repoYAML("a/one", "a/two")) }, "a/one", "a/two")
	if c := Diff(r.Previous, r.Config); len(c.Added) != 1 || c.Added[0].Name != "a/two" {
		t.Errorf("Diff = %+v, want a/two added", c)
	}
	if got := names(w.State().Config); got != "a/one,a/two" {
		t.Errorf("State().Config repos = %s", got)
	}
}

func TestReloadAfterReplaceByRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "repos.yaml")
	write(t, path, repoYAML("a/one"))
	w, reloads := startWatcher(t, path)
	waitWatching(t, w)

	eventually(t, reloads, func() {
		tmp := filepath.Join(dir, ".repos.yaml.swp")
		write(t, tmp, repoYAML("a/three"))
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}, "a/three")
}

// TestReloadAfterConfigMapSwap does what the kubelet does to a ConfigMap volume:
// the file is a link through ..data, and an update re-points ..data at a new directory.
func TestReloadAfterConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	mustDo := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustDo(os.Mkdir(filepath.Join(dir, "..2026_11_23_01"), 0o755))
	write(t, filepath.Join(dir, "..2026_11_23_01", "repos.yaml"), repoYAML("a/one"))
	mustDo(os.Symlink("..2026_11_23_01", filepath.Join(dir, "..data")))
	mustDo(os.Symlink("..data/repos.yaml", filepath.Join(dir, "repos.yaml")))
	path := filepath.Join(dir, "repos.yaml")
	w, reloads := startWatcher(t, path)
	waitWatching(t, w)

	eventually(t, reloads, func() {
		mustDo(os.Mkdir(filepath.Join(dir, "..2026_11_23_02"), 0o755))
		write(t, filepath.Join(dir, "..2026_11_23_02", "repos.yaml"), repoYAML("a/swapped"))
		mustDo(os.Symlink("..2026_11_23_02", filepath.Join(dir, "..data_tmp")))
		mustDo(os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
		mustDo(os.RemoveAll(filepath.Join(dir, "..2026_11_23_01")))
	}, "a/swapped")
}

// TestReloadOfAChangeBeforeRun: the file changed after NewWatcher read it and before Run
// watched it (a ConfigMap volume updated as the container starts): Run still reloads.
func TestReloadOfAChangeBeforeRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "repos.yaml")
	write(t, path, repoYAML("a/old"))
	w, err := NewWatcher(path, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	write(t, path, repoYAML("a/new"))
	ctx, cancel := context.WithCancel(context.Background())
	reloads := make(chan Reload, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Run(ctx, func(r Reload) { reloads <- r })
	}()
	t.Cleanup(func() { cancel(); <-done })
	waitReload(t, reloads, "a/new")
}

func TestFailedReloadKeepsTheLastGoodConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "repos.yaml")
	write(t, path, repoYAML("a/one"))
	w, reloads := startWatcher(t, path)
	waitWatching(t, w)

	write(t, path, "repos:\n  - {name: a/one, url: 'https://h/a', namespace: Not_Valid}\n")
	deadline := time.After(reloadWithin)
	for w.State().Err == nil {
		select {
		case <-reloads:
		case <-deadline:
			t.Fatal("the invalid file was not reported")
		}
	}
	st := w.State()
	if !strings.Contains(st.Err.Error(), "repos.yaml:2: repos[0].namespace") {
		t.Errorf("State().Err = %v, want the problem with its line", st.Err)
	}
	if names(st.Config) != "a/one" {
		t.Errorf("config in force = %s, want the last good one", names(st.Config))
	}

	eventually(t, reloads, func() { write(t, path, repoYAML("a/fixed")) }, "a/fixed")
	if err := w.State().Err; err != nil {
		t.Errorf("State().Err after a good reload = %v, want nil", err)
	}
}

func waitWatching(t *testing.T, w *Watcher) {
	t.Helper()
	select {
	case <-w.Watching():
	case <-time.After(reloadWithin):
		t.Fatal("watcher did not start")
	}
}
