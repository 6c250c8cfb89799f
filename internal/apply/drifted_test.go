package apply

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// TestDrifted dry-runs an applied commit: nothing drifted at first; then an edited
// ConfigMap, a scaled Deployment and a deleted one are found, and nothing is written.
func TestDrifted(t *testing.T) {
	a, repo := setup(t)
	ctx := context.Background()
	req := Request{Repo: repo, Commit: "c1", Number: 3, Objects: objects(t, map[string]string{
		"cm.yaml": configMap("settings", "one"), "web.yaml": deployment("web", "web", 2), "api.yaml": deployment("api", "api", 1)})}
	if _, err := a.Apply(ctx, req); err != nil {
		t.Fatal(err)
	}
	req.Number = 0 // a check has no number of its own
	got, err := a.Drifted(ctx, req)
	if err != nil || len(got) != 0 {
		t.Fatalf("right after the apply: drifted %+v, %v", got, err)
	}

	cm, err := env.Client.CoreV1().ConfigMaps(repo.Namespace).Get(ctx, "settings", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["value"] = "edited"
	if _, err := env.Client.CoreV1().ConfigMaps(repo.Namespace).Update(ctx, cm, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error { // the Deployment controller writes too
		web, err := env.Client.AppsV1().Deployments(repo.Namespace).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		five := int32(5)
		web.Spec.Replicas = &five
		_, err = env.Client.AppsV1().Deployments(repo.Namespace).Update(ctx, web, metav1.UpdateOptions{FieldManager: "kubectl"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Client.AppsV1().Deployments(repo.Namespace).Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err = a.Drifted(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	want := []Drifted{
		{Object: Ref{Version: "v1", Kind: "ConfigMap", Namespace: repo.Namespace, Name: "settings"}, Paths: []string{".data.value"}},
		{Object: Ref{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: repo.Namespace, Name: "web"}, Paths: []string{".spec.replicas"}},
		{Object: Ref{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: repo.Namespace, Name: "api"}, Deleted: true},
	}
	byName := map[string]Drifted{}
	for _, d := range got {
		byName[d.Object.Name] = d
	}
	for _, w := range want {
		if diff := cmp.Diff(w, byName[w.Object.Name]); diff != "" {
			t.Errorf("%s (-want +got):\n%s", w.Object.Name, diff)
		}
	}
	if len(got) != len(want) {
		t.Errorf("drifted %+v, want %d objects", got, len(want))
	}
	if cm, _ := env.Client.CoreV1().ConfigMaps(repo.Namespace).Get(ctx, "settings", metav1.GetOptions{}); cm.Data["value"] != "edited" {
		t.Errorf("the dry run wrote: value %q", cm.Data["value"])
	}
}
