package apply

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestDryRunChangesNothing dry-runs a changed set after an apply: each object comes
// with its live state and what the apply would make of it, the object that left is to
// be pruned, and the cluster is as the apply left it. As a ServiceAccount without
// rights, the dry run is refused by RBAC.
func TestDryRunChangesNothing(t *testing.T) {
	a, repo := setup(t)
	ctx := context.Background()
	applied := objects(t, map[string]string{"a.yaml": configMap("settings", "1"), "old.yaml": configMap("old", "1")})
	if _, err := a.Apply(ctx, Request{Repo: repo, Commit: "c1", Number: 1, Objects: applied}); err != nil {
		t.Fatal(err)
	}
	next := objects(t, map[string]string{"a.yaml": configMap("settings", "2"), "extra.yaml": configMap("extra", "1")})
	res, err := a.DryRun(ctx, Request{Repo: repo, Commit: "c2", Objects: next})
	if err != nil {
		t.Fatal(err)
	}
	type seen struct{ Object, Source, Live, After, Commit string }
	value := func(u *unstructured.Unstructured) string {
		if u == nil {
			return ""
		}
		v, _, _ := unstructured.NestedString(u.Object, "data", "value")
		return v
	}
	var got []seen
	for _, p := range res.Objects {
		got = append(got, seen{p.Object.Name, p.Source, value(p.Live), value(p.After), p.After.GetAnnotations()[AnnotationCommit]})
	}
	// The live object's commit annotation is kept: bookkeeping is no change to show.
	want := []seen{{"settings", "deploy/a.yaml:1", "1", "2", "c1"}, {"extra", "deploy/extra.yaml:1", "", "1", "c2"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dry run (-want +got)\n%s", diff)
	}
	if len(res.Pruned) != 1 || res.Pruned[0].Name != "old" {
		t.Errorf("pruned %v, want old", res.Pruned)
	}
	if cm, err := env.Client.CoreV1().ConfigMaps(repo.Namespace).Get(ctx, "settings", metav1.GetOptions{}); err != nil || cm.Data["value"] != "1" {
		t.Errorf("settings after the dry run: %v %v", cm.Data, err)
	}
	for name, want := range map[string]bool{"extra": false, "old": true} {
		_, err := env.Client.CoreV1().ConfigMaps(repo.Namespace).Get(ctx, name, metav1.GetOptions{})
		if exists := err == nil; exists != want || (err != nil && !apierrors.IsNotFound(err)) {
			t.Errorf("ConfigMap %s exists %v after the dry run (%v), want %v", name, exists, err, want)
		}
	}

	repo.ServiceAccount = "nobody"
	if _, err := env.Client.CoreV1().ServiceAccounts(repo.Namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = a.DryRun(ctx, Request{Repo: repo, Commit: "c2", Objects: next})
	if err == nil || !strings.Contains(err.Error(), `User "system:serviceaccount:`+repo.Namespace+`:nobody" cannot`) {
		t.Errorf("dry run as a ServiceAccount without rights: %v", err)
	}
}

// TestDryRunOfANewRepo dry-runs a repo whose namespace does not exist yet: its objects
// are listed, not dry-run, and the namespace is not created; without createNamespace the
// dry run fails as the apply would.
func TestDryRunOfANewRepo(t *testing.T) {
	a, repo := setup(t)
	repo.Namespace += "-new" // env.Namespace created the other
	ctx := context.Background()
	objs := objects(t, map[string]string{"a.yaml": configMap("settings", "1")})
	res, err := a.DryRun(ctx, Request{Repo: repo, Commit: "c1", Objects: objs})
	if err != nil || len(res.Objects) != 1 || res.Objects[0].NotChecked != NotCheckedNamespace || res.Objects[0].After != nil {
		t.Errorf("dry run of a new repo: %+v %v", res, err)
	}
	if _, err := env.Client.CoreV1().Namespaces().Get(ctx, repo.Namespace, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the dry run created the namespace: %v", err)
	}
	repo.CreateNamespace = false
	if _, err := a.DryRun(ctx, Request{Repo: repo, Commit: "c1", Objects: objs}); err == nil || !strings.Contains(err.Error(), "createNamespace: false") {
		t.Errorf("without createNamespace: %v", err)
	}
}
