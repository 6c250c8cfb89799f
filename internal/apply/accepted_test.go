package apply

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"

	"github.com/deployd/deployd/internal/render"
)

// dryRunCounter counts the dry-run requests an Applier sends.
type dryRunCounter struct {
	next http.RoundTripper
	n    *atomic.Int64
}

func (c dryRunCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Query().Get("dryRun") == "All" {
		c.n.Add(1)
	}
	return c.next.RoundTrip(r)
}

// TestDryRunsWhatChanged: the dry run judges only the objects that changed since the
// repo's last set applied whole; one changed object is applied first and alone, so its
// refusal leaves the others as they were; after a failed apply the whole set is judged
// again.
func TestDryRunsWhatChanged(t *testing.T) {
	var dryRuns atomic.Int64
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return dryRunCounter{next: rt, n: &dryRuns} })
	opts := DefaultOptions()
	opts.StateNamespace = env.Namespace(t)
	a, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	_, repo := setup(t)
	ctx := context.Background()
	badService := "apiVersion: v1\nkind: Service\nmetadata: {name: svc}\nspec: {ports: [{port: 99999}]}\n"
	badService2 := "apiVersion: v1\nkind: Service\nmetadata: {name: svc2}\nspec: {ports: [{port: 99999}]}\n"
	goodService := "apiVersion: v1\nkind: Service\nmetadata: {name: svc}\nspec: {ports: [{port: 80}]}\n"
	steps := []struct {
		name    string
		commit  string
		files   map[string]string
		dryRuns int64
		invalid bool // a ValidationError: nothing applied
	}{
		{"first set: every object judged", "c1", map[string]string{"a.yaml": configMap("a", "1"), "b.yaml": configMap("b", "1"), "svc.yaml": goodService}, 3, false},
		{"same objects at a new commit: none judged", "c2", map[string]string{"a.yaml": configMap("a", "1"), "b.yaml": configMap("b", "1"), "svc.yaml": goodService}, 0, false},
		{"one changed: applied first, not judged apart", "c3", map[string]string{"a.yaml": configMap("a", "2"), "b.yaml": configMap("b", "1"), "svc.yaml": goodService}, 0, false},
		{"two changed: both judged", "c4", map[string]string{"a.yaml": configMap("a", "3"), "b.yaml": configMap("b", "3"), "svc.yaml": goodService}, 2, false},
		{"two changed, one refused: nothing applied", "c5", map[string]string{"a.yaml": configMap("a", "5"), "b.yaml": configMap("b", "3"), "svc.yaml": badService}, 2, true},
		{"one changed and refused: nothing applied", "c6", map[string]string{"a.yaml": configMap("a", "3"), "b.yaml": configMap("b", "3"), "svc.yaml": badService}, 0, true},
		{"the accepted set again: none judged", "c7", map[string]string{"a.yaml": configMap("a", "3"), "b.yaml": configMap("b", "3"), "svc.yaml": goodService}, 0, false},
		{"a new object: applied alone", "c8", map[string]string{"a.yaml": configMap("a", "3"), "b.yaml": configMap("b", "3"), "svc.yaml": goodService, "c.yaml": configMap("c", "1")}, 0, false},
		{"two new, one refused: nothing applied", "c9", map[string]string{"a.yaml": configMap("a", "3"), "b.yaml": configMap("b", "3"), "svc.yaml": goodService, "c.yaml": configMap("c", "1"), "d.yaml": configMap("d", "1"), "bad.yaml": badService2}, 2, true},
	}
	last := "" // the commit the ConfigMaps carry: the last step that succeeded
	for _, s := range steps {
		before := dryRuns.Load()
		_, err := a.Apply(ctx, Request{Repo: repo, Commit: s.commit, Objects: objects(t, s.files)})
		var ve *ValidationError
		switch {
		case s.invalid && !errors.As(err, &ve):
			t.Fatalf("%s: error %v, want a ValidationError", s.name, err)
		case !s.invalid && err != nil:
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := dryRuns.Load() - before; got != s.dryRuns {
			t.Errorf("%s: %d objects dry-run, want %d", s.name, got, s.dryRuns)
		}
		if !s.invalid {
			last = s.commit
		}
		for _, name := range []string{"a", "b"} {
			cm, err := get(t, cmGVR, repo.Namespace, name)
			if err != nil {
				t.Fatal(err)
			}
			want := s.files[name+".yaml"]
			if s.invalid {
				want = configMap(name, "3") // as step c4 left them
			}
			if v, _, _ := unstructured.NestedString(cm.Object, "data", "value"); !strings.Contains(want, `"`+v+`"`) {
				t.Errorf("%s: ConfigMap %s holds %q, want it from %q", s.name, name, v, want)
			}
			if c := cm.GetAnnotations()[AnnotationCommit]; c != last {
				t.Errorf("%s: ConfigMap %s at commit %s, want %s", s.name, name, c, last)
			}
		}
		if _, err := get(t, cmGVR, repo.Namespace, "d"); s.invalid && !apierrors.IsNotFound(err) {
			t.Errorf("%s: ConfigMap d applied (err %v)", s.name, err)
		}
	}
}

// TestRecordedBeforeTheFirstWrite: the apply waits for the deployment's record before
// it writes anything (the namespace it would create included), takes its number from it,
// and writes nothing when recording failed.
func TestRecordedBeforeTheFirstWrite(t *testing.T) {
	a, repo := setup(t)
	ctx := context.Background()
	repo.Namespace += "-new" // missing: the apply would create it
	objs := objects(t, map[string]string{"a.yaml": configMap("a", "1"), "b.yaml": configMap("b", "1")})
	_, err := a.Apply(ctx, Request{Repo: repo, Commit: "c1", Objects: objs, Recorded: func() (int, error) { return 0, errors.New("state ConfigMap unwritable") }})
	if err == nil || !strings.Contains(err.Error(), "state ConfigMap unwritable") {
		t.Fatalf("error %v, want the record's", err)
	}
	if _, err := env.Client.CoreV1().Namespaces().Get(ctx, repo.Namespace, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("namespace %s created without a record (err %v)", repo.Namespace, err)
	}
	t.Cleanup(func() {
		_ = env.Client.CoreV1().Namespaces().Delete(context.Background(), repo.Namespace, metav1.DeleteOptions{})
	})
	calls := 0
	res, err := a.Apply(ctx, Request{Repo: repo, Commit: "c1", Objects: objs, Recorded: func() (int, error) { calls++; return 9, nil }})
	if err != nil || !res.NamespaceCreated || calls != 1 {
		t.Fatalf("apply: %v, namespace created %v, recorded called %d times", err, res.NamespaceCreated, calls)
	}
	for _, name := range []string{"a", "b"} {
		cm, err := get(t, cmGVR, repo.Namespace, name)
		if err != nil {
			t.Fatal(err)
		}
		if n := cm.GetAnnotations()[AnnotationDeployment]; n != "9" {
			t.Errorf("ConfigMap %s: deployment %q, want 9", name, n)
		}
	}
}

// TestFailedApplyJudgesTheWholeSetAgain: an unchanged object refused at its apply (here
// made immutable by hand with other data) fails the deployment after the one changed
// object landed; the next apply dry-runs every object again, and refuses the set whole.
func TestFailedApplyJudgesTheWholeSetAgain(t *testing.T) {
	var dryRuns atomic.Int64
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return dryRunCounter{next: rt, n: &dryRuns} })
	opts := DefaultOptions()
	opts.StateNamespace = env.Namespace(t)
	a, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	_, repo := setup(t)
	ctx := context.Background()
	set := func(value string) []render.Object {
		return objects(t, map[string]string{"a.yaml": configMap("a", value), "b.yaml": configMap("b", "1")})
	}
	if _, err := a.Apply(ctx, Request{Repo: repo, Commit: "c1", Objects: set("1")}); err != nil {
		t.Fatal(err)
	}
	b, err := env.Client.CoreV1().ConfigMaps(repo.Namespace).Get(ctx, "b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	immutable := true
	b.Data, b.Immutable = map[string]string{"value": "by hand"}, &immutable
	if _, err := env.Client.CoreV1().ConfigMaps(repo.Namespace).Update(ctx, b, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}

	before := dryRuns.Load()
	_, err = a.Apply(ctx, Request{Repo: repo, Commit: "c2", Objects: set("2")})
	var ve *ValidationError
	if err == nil || errors.As(err, &ve) || !strings.Contains(err.Error(), "ConfigMap/"+repo.Namespace+"/b: apply:") {
		t.Fatalf("error %v, want b's apply refused", err)
	}
	if n := dryRuns.Load() - before; n != 0 {
		t.Errorf("%d objects dry-run, want none (one changed)", n)
	}
	cm, err := get(t, cmGVR, repo.Namespace, "a")
	if err != nil {
		t.Fatal(err)
	}
	if v, _, _ := unstructured.NestedString(cm.Object, "data", "value"); v != "2" {
		t.Errorf("a holds %q, want the change applied first", v)
	}

	before = dryRuns.Load()
	_, err = a.Apply(ctx, Request{Repo: repo, Commit: "c2", Objects: set("2")})
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "ConfigMap/"+repo.Namespace+"/b") {
		t.Fatalf("error %v, want a ValidationError naming b", err)
	}
	if n := dryRuns.Load() - before; n != 2 {
		t.Errorf("%d objects dry-run, want both", n)
	}
}
