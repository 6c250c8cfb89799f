package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/simcluster"
)

var env *simcluster.Env

func TestMain(m *testing.M) { os.Exit(simcluster.Main(m, &env)) }

// reloadWithin is the promise: a ConfigMap edit acts within 2 seconds.
const reloadWithin = 2 * time.Second

func reposYAML(names ...string) string {
	var b strings.Builder
	b.WriteString("repos:\n")
	for _, n := range names {
		b.WriteString("  - {name: o/" + n + ", url: 'https://h/o/" + n + "', namespace: ns}\n")
	}
	return b.String()
}

func repoNames(c *config.Config) string {
	var out []string
	for _, r := range c.Repos {
		out = append(out, strings.TrimPrefix(r.Name, "o/"))
	}
	return strings.Join(out, ",")
}

// nextReload waits for a reload that passes ok, failing after reloadWithin.
func nextReload(t *testing.T, reloads <-chan config.Reload, what string, ok func(config.Reload) bool) config.Reload {
	t.Helper()
	deadline := time.After(reloadWithin)
	for {
		select {
		case r := <-reloads:
			if ok(r) {
				return r
			}
		case <-deadline:
			t.Fatalf("no reload %s within %v", what, reloadWithin)
		}
	}
}

func withRepos(want string) func(config.Reload) bool {
	return func(r config.Reload) bool { return r.Err == nil && r.Config != nil && repoNames(r.Config) == want }
}

func refused(substr string) func(config.Reload) bool {
	return func(r config.Reload) bool { return r.Err != nil && strings.Contains(r.Err.Error(), substr) }
}

// TestConfigMapWatchReloads edits repos.yaml's ConfigMap through the API: a valid edit
// is in force within reloadWithin, an invalid one is refused with its line and the last
// good config keeps running, a deletion keeps it too, and the file still feeds the
// same watcher.
func TestConfigMapWatchReloads(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := "cfgwatch"
	if _, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cms := env.Client.CoreV1().ConfigMaps(ns)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "deployd-repos"}, Data: map[string]string{configMapKey: reposYAML("a")}}
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Another ConfigMap in the namespace is not watched.
	other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Data: map[string]string{configMapKey: reposYAML("x")}}
	if _, err := cms.Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(t.TempDir(), "repos.yaml")
	if err := os.WriteFile(path, []byte(reposYAML("a")), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := config.NewWatcher(path, config.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	reloads := make(chan config.Reload, 16)
	done := make(chan struct{}, 2)
	go func() { _ = w.Run(ctx, func(r config.Reload) { reloads <- r }); done <- struct{}{} }()
	ref, err := parseConfigMapRef(ns + "/deployd-repos")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		if err := watchConfigMap(ctx, env.Client, ref, w); err != nil {
			t.Errorf("watchConfigMap: %v", err)
		}
		done <- struct{}{}
	}()
	defer func() { cancel(); <-done; <-done }()

	update := func(data string) {
		t.Helper()
		cm.Data[configMapKey] = data
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	update(reposYAML("a", "b"))
	nextReload(t, reloads, "with repos a,b", withRepos("a,b"))

	// Line 4: the third repo has no url.
	update(reposYAML("a", "b") + "  - {name: o/c, namespace: ns}\n")
	nextReload(t, reloads, "refusing line 4", refused("configmap "+ns+"/deployd-repos repos.yaml:4"))
	if got := repoNames(w.State().Config); got != "a,b" {
		t.Errorf("after an invalid edit, repos in force = %q, want the last good a,b", got)
	}

	update(reposYAML("a", "b", "c"))
	nextReload(t, reloads, "with repos a,b,c", withRepos("a,b,c"))

	if err := cms.Delete(ctx, cm.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	nextReload(t, reloads, "telling of the deletion", refused("was deleted"))
	if got := repoNames(w.State().Config); got != "a,b,c" {
		t.Errorf("after deletion, repos in force = %q, want the last good a,b,c", got)
	}

	// The file still feeds the watcher.
	if err := os.WriteFile(path, []byte(reposYAML("d")), 0o600); err != nil {
		t.Fatal(err)
	}
	nextReload(t, reloads, "from the file with repos d", withRepos("d"))
}

func TestParseConfigMapRef(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    configMapRef
		wantErr bool
	}{
		{in: "deployd/deployd-repos", want: configMapRef{"deployd", "deployd-repos"}},
		{in: "deployd-repos", wantErr: true},
		{in: "/deployd-repos", wantErr: true},
		{in: "deployd/", wantErr: true},
		{in: "a/b/c", wantErr: true},
	} {
		got, err := parseConfigMapRef(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseConfigMapRef(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
