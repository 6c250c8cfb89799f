package rollout

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/render"
	"github.com/deployd/deployd/internal/simcluster"
)

var env *simcluster.Env

func TestMain(m *testing.M) { os.Exit(simcluster.Main(m, &env)) }

func obj(t *testing.T, y string) *unstructured.Unstructured {
	t.Helper()
	js, err := sigsyaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		t.Fatal(err)
	}
	return u
}

func TestCompute(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    Status
		summary string
	}{{
		name: "a rolled-out Deployment is Current with its counts",
		yaml: `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, generation: 2}
spec: {replicas: 3, template: {spec: {containers: [{name: a, image: "nginx:1.27"}, {name: b, image: "envoy:1"}]}}}
status: {observedGeneration: 2, replicas: 3, updatedReplicas: 3, readyReplicas: 3, availableReplicas: 3,
  conditions: [{type: Available, status: "True"}, {type: Progressing, status: "True", reason: NewReplicaSetAvailable}]}`,
		want: Current, summary: "Deployment is available. Replicas: 3",
	}, {
		name: "a Deployment half-way is InProgress",
		yaml: `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, generation: 2}
spec: {replicas: 3}
status: {observedGeneration: 2, replicas: 3, updatedReplicas: 3, readyReplicas: 2, availableReplicas: 2}`,
		want: InProgress, summary: "2 of 3 updated replicas available",
	}, {
		name: "a Deployment past its progress deadline Failed",
		yaml: `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, generation: 2}
spec: {replicas: 3}
status: {observedGeneration: 2, replicas: 3, updatedReplicas: 3, readyReplicas: 0, availableReplicas: 0,
  conditions: [{type: Available, status: "False", reason: MinimumReplicasUnavailable}, {type: Progressing, status: "False", reason: ProgressDeadlineExceeded}]}`,
		want: Failed, summary: "ProgressDeadlineExceeded",
	}, {
		name: "a ConfigMap is Current at once",
		yaml: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
		want: Current, summary: "Resource is always ready",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Compute(obj(t, tt.yaml))
			if got.Status != tt.want || got.Summary() != tt.summary {
				t.Errorf("status %s %q, want %s %q", got.Status, got.Summary(), tt.want, tt.summary)
			}
		})
	}
	d := Compute(obj(t, tests[0].yaml))
	if d.Replicas == nil || *d.Replicas != (Replicas{Desired: 3, Updated: 3, Ready: 3, Available: 3}) || strings.Join(d.Images, ",") != "envoy:1,nginx:1.27" {
		t.Errorf("details %+v %v", d.Replicas, d.Images)
	}
}

func deployment(name string, replicas int, crash bool) string {
	labels := "app: " + name
	if crash {
		labels += ", " + simcluster.CrashLoopLabel + `: "true"`
	}
	return `apiVersion: apps/v1
kind: Deployment
metadata: {name: ` + name + `}
spec:
  replicas: ` + string(rune('0'+replicas)) + `
  progressDeadlineSeconds: 3
  selector: {matchLabels: {app: ` + name + `}}
  template:
    metadata: {labels: {` + labels + `}}
    spec: {containers: [{name: web, image: "nginx:1.27"}]}
`
}

// applyNow applies manifests and returns what to wait for.
func applyNow(t *testing.T, ns string, files map[string]string) []Target {
	t.Helper()
	opts := apply.DefaultOptions()
	opts.StateNamespace = ns
	a, err := apply.New(env.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for k, v := range files {
		m["d/"+k] = []byte(v)
	}
	objs, err := render.Render(context.Background(), m, "d", render.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	repo := config.Repo{Name: "a/b", Namespace: ns, Environment: "dev", Settings: config.Settings{Prune: true}}
	res, err := a.Apply(context.Background(), apply.Request{Repo: repo, Commit: "c", Objects: objs})
	if err != nil {
		t.Fatal(err)
	}
	return TargetsOf(res.Changes)
}

func tracker(t *testing.T) *Tracker {
	t.Helper()
	tr, err := NewTracker(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tr.Start(ctx)
	t.Cleanup(cancel)
	return tr
}

func TestWait(t *testing.T) {
	tr := tracker(t)
	t.Run("success with replica counts", func(t *testing.T) {
		ns := env.Namespace(t)
		targets := applyNow(t, ns, map[string]string{"web.yaml": deployment("web", 3, false), "cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"})
		res := tr.Wait(context.Background(), targets, time.Minute)
		if res.Outcome != Succeeded {
			t.Fatalf("outcome %s: %s", res.Outcome, res.Message)
		}
		for i, tg := range targets {
			if tg.Kind == "Deployment" {
				if r := res.Objects[i].Replicas; r == nil || r.Available != 3 || r.Desired != 3 {
					t.Errorf("replicas %+v", r)
				}
			}
		}
	})
	t.Run("a failed rollout names the object and reason", func(t *testing.T) {
		ns := env.Namespace(t)
		targets := applyNow(t, ns, map[string]string{"web.yaml": deployment("web", 2, true)})
		res := tr.Wait(context.Background(), targets, time.Minute)
		if res.Outcome != FailedRollout || res.Message != "Deployment web: ProgressDeadlineExceeded" {
			t.Errorf("outcome %s %q", res.Outcome, res.Message)
		}
	})
	t.Run("a timeout says what it waited for", func(t *testing.T) {
		ns := env.Namespace(t)
		slow := strings.Replace(deployment("slow", 3, true), "progressDeadlineSeconds: 3", "progressDeadlineSeconds: 600", 1)
		targets := applyNow(t, ns, map[string]string{"web.yaml": slow})
		res := tr.Wait(context.Background(), targets, 2*time.Second)
		if res.Outcome != FailedRollout || res.Message != "timed out after 2s waiting for Deployment slow: 0 of 3 updated replicas available" {
			t.Errorf("outcome %s %q", res.Outcome, res.Message)
		}
	})
	t.Run("a cancelled wait ends at once", func(t *testing.T) {
		ns := env.Namespace(t)
		targets := applyNow(t, ns, map[string]string{"web.yaml": deployment("never", 1, true)})
		ctx, cancel := context.WithCancel(context.Background())
		go cancel()
		if res := tr.Wait(ctx, targets, time.Minute); res.Outcome != Cancelled {
			t.Errorf("outcome %s", res.Outcome)
		}
	})
	t.Run("health drift after success is visible", func(t *testing.T) {
		ns := env.Namespace(t)
		targets := applyNow(t, ns, map[string]string{"web.yaml": deployment("web", 1, false)})
		if res := tr.Wait(context.Background(), targets, time.Minute); res.Outcome != Succeeded {
			t.Fatalf("outcome %s: %s", res.Outcome, res.Message)
		}
		// Someone breaks it by hand: deployd's watch sees the Deployment leave Current.
		d, err := env.Client.AppsV1().Deployments(ns).Get(context.Background(), "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d.Spec.Template.Labels[simcluster.CrashLoopLabel] = "true"
		if _, err := env.Client.AppsV1().Deployments(ns).Update(context.Background(), d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(30 * time.Second)
		for tr.Get(targets[0].Ref).Status == Current || tr.Get(targets[0].Ref).Generation < 2 {
			select {
			case <-tr.Changed():
			case <-deadline:
				t.Fatalf("status stayed %+v", tr.Get(targets[0].Ref))
			}
		}
	})
}

// TestCachedKeepsTheStatusOnly: what a watch keeps of an object is its identity and the
// status computed from the whole object, nothing of its spec or data.
func TestCachedKeepsTheStatusOnly(t *testing.T) {
	dep := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": "web", "namespace": "shop", "generation": int64(3),
			"annotations":   map[string]any{"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
			"managedFields": []any{map[string]any{"manager": "deployd"}}},
		"spec": map[string]any{"replicas": int64(2), "template": map[string]any{
			"metadata": map[string]any{"labels": map[string]any{"app": "web"}},
			"spec": map[string]any{"containers": []any{map[string]any{"name": "web", "image": "nginx:1.27",
				"env": []any{map[string]any{"name": "PASSWORD", "value": "hunter2"}}}}}}},
		"status": map[string]any{"observedGeneration": int64(3), "replicas": int64(2), "updatedReplicas": int64(2),
			"readyReplicas": int64(2), "availableReplicas": int64(2),
			"conditions": []any{map[string]any{"type": "Available", "status": "True"}, map[string]any{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}}},
	}}
	want := Compute(dep.DeepCopy())
	tr := &Tracker{compute: Compute}
	c := tr.shrink(dep)
	if diff := cmp.Diff(want, c.status); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	if s := fmt.Sprintf("%+v", c); strings.Contains(s, "hunter2") || strings.Contains(s, "last-applied") || strings.Contains(s, "PASSWORD") || len(c.ManagedFields) > 0 || c.Annotations != nil {
		t.Errorf("cached object holds more than its identity and status: %s", s)
	}
	if got := key(c.GroupVersionKind().GroupKind().String(), c.Namespace, c.Name); got != "Deployment.apps/shop/web" {
		t.Errorf("key %q, want Deployment.apps/shop/web", got)
	}
	u := unstructuredOf(c)
	if u.GetKind() != "Deployment" || u.GetAPIVersion() != "apps/v1" || u.GetNamespace() != "shop" || u.GetName() != "web" {
		t.Errorf("identity told of a deletion: %v", u.Object)
	}
}
