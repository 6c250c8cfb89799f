package state

import (
	"context"
	"net/http"
	"os"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/deployd/deployd/internal/simcluster"
)

var env *simcluster.Env

func TestMain(m *testing.M) { os.Exit(simcluster.Main(m, &env)) }

// counting returns a clientset that counts its requests to the API server.
func counting(t *testing.T) (kubernetes.Interface, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTrip(func(r *http.Request) (*http.Response, error) { n.Add(1); return rt.RoundTrip(r) })
	})
	return kubernetes.NewForConfigOrDie(cfg), &n
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func set(key, value string) func(map[string]string) error {
	return func(d map[string]string) error { d[key] = value; return nil }
}

func TestModify(t *testing.T) {
	ctx := context.Background()
	meta := metav1.ObjectMeta{Labels: map[string]string{"app.kubernetes.io/managed-by": "deployd"}}

	t.Run("a write after the first costs one request", func(t *testing.T) {
		kube, n := counting(t)
		s := New(kube, env.Namespace(t))
		if err := s.Modify(ctx, "repo", meta, set("a", "1")); err != nil {
			t.Fatal(err)
		}
		before := n.Load()
		if err := s.Modify(ctx, "repo", meta, set("b", "2")); err != nil {
			t.Fatal(err)
		}
		if got := n.Load() - before; got != 1 {
			t.Errorf("second write took %d requests, want 1", got)
		}
		cm, err := env.Client.CoreV1().ConfigMaps(s.Namespace()).Get(ctx, "repo", metav1.GetOptions{})
		if err != nil || cm.Data["a"] != "1" || cm.Data["b"] != "2" || cm.Labels["app.kubernetes.io/managed-by"] != "deployd" {
			t.Errorf("stored %v %v, %v", cm.Data, cm.Labels, err)
		}
	})

	t.Run("a change left as it was writes nothing", func(t *testing.T) {
		kube, n := counting(t)
		s := New(kube, env.Namespace(t))
		if err := s.Modify(ctx, "repo", meta, set("a", "1")); err != nil {
			t.Fatal(err)
		}
		before := n.Load()
		if err := s.Modify(ctx, "repo", meta, set("a", "1")); err != nil {
			t.Fatal(err)
		}
		if got := n.Load() - before; got != 0 {
			t.Errorf("an unchanged write took %d requests", got)
		}
	})

	t.Run("another writer's change is kept, not overwritten", func(t *testing.T) {
		ns := env.Namespace(t)
		a, b := New(env.Client, ns), New(env.Client, ns)
		if err := a.Modify(ctx, "repo", meta, set("a", "1")); err != nil {
			t.Fatal(err)
		}
		if err := b.Modify(ctx, "repo", meta, set("b", "2")); err != nil { // a's copy is now stale
			t.Fatal(err)
		}
		if err := a.Modify(ctx, "repo", meta, set("c", "3")); err != nil {
			t.Fatal(err)
		}
		cm, _ := env.Client.CoreV1().ConfigMaps(ns).Get(ctx, "repo", metav1.GetOptions{})
		if cm.Data["a"] != "1" || cm.Data["b"] != "2" || cm.Data["c"] != "3" {
			t.Errorf("data %v, want a, b and c", cm.Data)
		}
	})

	t.Run("a ConfigMap deleted by hand is created again", func(t *testing.T) {
		s := New(env.Client, env.Namespace(t))
		if err := s.Modify(ctx, "repo", meta, set("a", "1")); err != nil {
			t.Fatal(err)
		}
		if err := env.Client.CoreV1().ConfigMaps(s.Namespace()).Delete(ctx, "repo", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := s.Modify(ctx, "repo", meta, set("b", "2")); err != nil {
			t.Fatal(err)
		}
		cm, err := env.Client.CoreV1().ConfigMaps(s.Namespace()).Get(ctx, "repo", metav1.GetOptions{})
		if err != nil || cm.Data["a"] != "" || cm.Data["b"] != "2" {
			t.Errorf("data %v, %v: want only b", cm.Data, err)
		}
		if !s.Deleted("repo") {
			t.Error("Deleted is false after a write found the ConfigMap gone")
		}
		if err := s.Modify(ctx, "new", meta, set("a", "1")); err != nil {
			t.Fatal(err)
		}
		if s.Deleted("new") {
			t.Error("a ConfigMap missing when first read counts as deleted")
		}
	})

	t.Run("a deletion a watch tells of counts, once the ConfigMap was seen", func(t *testing.T) {
		s := New(env.Client, env.Namespace(t))
		s.ObserveDeleted("never-seen")
		if err := s.Modify(ctx, "repo", meta, set("a", "1")); err != nil {
			t.Fatal(err)
		}
		s.ObserveDeleted("repo")
		if !s.Deleted("repo") || s.Deleted("never-seen") {
			t.Errorf("Deleted: repo %v, never-seen %v; want true, false", s.Deleted("repo"), s.Deleted("never-seen"))
		}
	})
}

func TestPreload(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	if err := New(env.Client, ns).Modify(ctx, "one", metav1.ObjectMeta{}, set("k", "v")); err != nil {
		t.Fatal(err)
	}
	kube, n := counting(t)
	s := New(kube, ns)
	if err := s.Preload(ctx, []string{"one", "two"}); err != nil {
		t.Fatal(err)
	}
	one, err1 := s.Get(ctx, "one")
	two, err2 := s.Get(ctx, "two")
	if err1 != nil || err2 != nil || one == nil || one.Data["k"] != "v" || two != nil {
		t.Errorf("one %v (%v), two %v (%v)", one, err1, two, err2)
	}
	if n.Load() != 1 {
		t.Errorf("preload and two reads took %d requests, want 1", n.Load())
	}
	one.Data["k"] = "changed by the caller"
	if again, _ := s.Get(ctx, "one"); again.Data["k"] != "v" {
		t.Error("Get returned the remembered ConfigMap itself, not a copy")
	}
}
