package apply

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/deployd/deployd/internal/render"
)

// hostile renders a file of testdata as the repo's only manifest.
func hostile(t *testing.T, name string) []render.Object {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return objects(t, map[string]string{name: string(b)})
}

// TestRefusesCRDsThatRedefineCoreKinds applies sets whose CustomResourceDefinition
// declares CustomResourceDefinition itself, or a core kind: each is refused with a
// message naming the object, nothing is applied, and the applier still applies a
// normal set afterwards. Before, the first one reached the apply with no REST mapping
// and the nil dereference ended the process.
func TestRefusesCRDsThatRedefineCoreKinds(t *testing.T) {
	tests := []struct {
		file, want string
	}{
		{"crd-redefines-crd.yaml", "deploy/crd-redefines-crd.yaml:4: CustomResourceDefinition/customresourcedefinitions.apiextensions.k8s.io: it defines the kind CustomResourceDefinition of group apiextensions.k8s.io itself: a repo may never redefine it; remove this object"},
		{"crd-core-group.yaml", "deploy/crd-core-group.yaml:3: CustomResourceDefinition/namespaces.core: it defines kind Namespace with an empty spec.group (the core group): set spec.group to a domain of your own"},
	}
	for _, tt := range tests {
		for _, allow := range []bool{false, true} {
			name := tt.file
			if allow {
				name += ", cluster-scoped allowed"
			}
			t.Run(name, func(t *testing.T) {
				a, repo := setup(t)
				repo.AllowClusterScoped = allow
				ctx := context.Background()
				_, err := a.Apply(ctx, Request{Repo: repo, Commit: "c1", Objects: hostile(t, tt.file)})
				var invalid *ValidationError
				if !errors.As(err, &invalid) {
					t.Fatalf("err %v, want a *ValidationError", err)
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Errorf("err:\n%v\nwant it to contain:\n%s", err, tt.want)
				}
				nsGVR := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
				if _, err := dynamicFor(t).Resource(nsGVR).Get(ctx, "hostile-namespace", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Errorf("namespace hostile-namespace: %v, want it never created", err)
				}
				res, err := a.Apply(ctx, Request{Repo: repo, Commit: "c2", Objects: objects(t, map[string]string{"cm.yaml": configMap("settings", "1")})})
				if err != nil || len(res.Changes) != 1 {
					t.Fatalf("the next set: %v %+v", err, res)
				}
			})
		}
	}
}

// TestPanicsInApplyGoroutinesAreErrors gives the read, the dry run and the apply an object whose
// mapping has no scope, so resolving its resource panics inside their errgroup
// goroutines: each panic comes back as an error naming it, and the process goes on.
func TestPanicsInApplyGoroutinesAreErrors(t *testing.T) {
	a, repo := setup(t)
	obj := objects(t, map[string]string{"cm.yaml": configMap("settings", "1")})[0]
	broken := func() *item {
		return &item{obj: obj.DeepCopy(), source: obj.Source, mapping: &meta.RESTMapping{Resource: cmGVR}}
	}
	ctx := context.Background()
	want := "deployd panicked: runtime error: invalid memory address or nil pointer dereference"
	_, err := a.prepare(ctx, a.own.dyn, repo, []*item{broken()}, func() error { return nil })
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("read: %v, want %q", err, want)
	}
	err = a.dryRun(ctx, a.own.dyn, []*item{broken()})
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("dry run: %v, want %q", err, want)
	}
	_, err = a.applyAll(ctx, a.own.dyn, []*item{broken()})
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("apply: %v, want %q", err, want)
	}
	if _, err := a.Apply(ctx, Request{Repo: repo, Commit: "c", Objects: []render.Object{obj}}); err != nil {
		t.Errorf("a normal apply afterwards: %v", err)
	}
}
