package drift

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
)

func entry(manager string, op metav1.ManagedFieldsOperationType, fields string, at time.Time) metav1.ManagedFieldsEntry {
	return metav1.ManagedFieldsEntry{Manager: manager, Operation: op, FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(fields), Time: &metav1.Time{Time: at}}
}

func TestCompare(t *testing.T) {
	const applied = `{"f:spec":{"f:replicas":{},"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:image":{},"f:name":{}}}}}}}`
	const withoutReplicas = `{"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:image":{},"f:name":{}}}}}}}`
	t0 := time.Unix(1000, 0)
	ref := apply.Ref{Version: "v1", Kind: "Deployment", Namespace: "shop", Name: "web"}
	tests := []struct {
		name     string
		baseline string
		live     []metav1.ManagedFieldsEntry
		want     *Object
	}{{
		name:     "unchanged",
		baseline: applied,
		live:     []metav1.ManagedFieldsEntry{entry("deployd", metav1.ManagedFieldsOperationApply, applied, t0)},
	}, {
		name:     "replicas scaled by kubectl",
		baseline: applied,
		live: []metav1.ManagedFieldsEntry{entry("deployd", metav1.ManagedFieldsOperationApply, withoutReplicas, t0),
			entry("kubectl", metav1.ManagedFieldsOperationUpdate, `{"f:spec":{"f:replicas":{}}}`, t0)},
		want: &Object{Ref: ref, Fields: []Field{{Path: ".spec.replicas", Manager: "kubectl"}}},
	}, {
		name:     "replicas an autoscaler owns, never applied, are not drift",
		baseline: withoutReplicas,
		live: []metav1.ManagedFieldsEntry{entry("deployd", metav1.ManagedFieldsOperationApply, withoutReplicas, t0),
			entry("hpa-controller", metav1.ManagedFieldsOperationUpdate, `{"f:spec":{"f:replicas":{}}}`, t0)},
	}, {
		name:     "a container's image removed: the latest other writer is named",
		baseline: applied,
		live: []metav1.ManagedFieldsEntry{
			entry("deployd", metav1.ManagedFieldsOperationApply, `{"f:spec":{"f:replicas":{},"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:name":{}}}}}}}`, t0),
			entry("old", metav1.ManagedFieldsOperationUpdate, `{"f:metadata":{"f:labels":{}}}`, t0),
			entry("editor", metav1.ManagedFieldsOperationUpdate, `{"f:metadata":{"f:annotations":{}}}`, t0.Add(time.Second))},
		want: &Object{Ref: ref, Fields: []Field{{Path: `.spec.template.spec.containers[name="web"].image`, Manager: "editor"}}},
	}, {
		name:     "fields taken by another applier with force",
		baseline: applied,
		live: []metav1.ManagedFieldsEntry{entry("deployd", metav1.ManagedFieldsOperationApply, `{"f:spec":{"f:replicas":{}}}`, t0),
			entry("other", metav1.ManagedFieldsOperationApply, withoutReplicas, t0)},
		want: &Object{Ref: ref, Fields: []Field{
			{Path: `.spec.template.spec.containers[name="web"].image`, Manager: "other"},
			{Path: `.spec.template.spec.containers[name="web"].name`, Manager: "other"}}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Compare(ref, []byte(tt.baseline), tt.live, "deployd")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("drift (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFieldsAreBounded: an object with every field taken lists MaxFields of them.
func TestFieldsAreBounded(t *testing.T) {
	fields := `{"f:data":{`
	for i := range MaxFields + 1 {
		if i > 0 {
			fields += ","
		}
		fields += `"f:k` + string(rune('a'+i)) + `":{}`
	}
	fields += `}}`
	got := Compare(apply.Ref{Kind: "ConfigMap", Name: "c"}, []byte(fields), []metav1.ManagedFieldsEntry{entry("kubectl", metav1.ManagedFieldsOperationUpdate, fields, time.Unix(0, 0))}, "deployd")
	if got == nil || len(got.Fields) != MaxFields {
		t.Fatalf("drift %+v, want %d fields", got, MaxFields)
	}
}

func live(name string, mfs ...metav1.ManagedFieldsEntry) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("ConfigMap")
	u.SetNamespace("shop")
	u.SetName(name)
	u.SetManagedFields(mfs)
	return u
}

// TestBaselinesAreBounded: past MaxBytes an object keeps no baseline (its field drift
// is not seen, its deletion is), and forgetting a repo gives the bytes back.
func TestBaselinesAreBounded(t *testing.T) {
	const owned = `{"f:data":{"f:value":{}}}`
	t0 := time.Unix(0, 0)
	opts := DefaultOptions()
	opts.MaxBytes = len(owned) + 1 // one object's baseline
	d := New(opts)
	repo := config.Repo{Name: "shop/web", Namespace: "shop", Environment: "dev", Settings: config.Settings{Drift: config.DriftReport}}
	ref := func(name string) apply.Ref {
		return apply.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "shop", Name: name}
	}
	d.Begin(repo)
	d.End(repo, "c1", apply.Result{Changes: []apply.Change{{Object: ref("a"), Action: apply.Created, Fields: []byte(owned)}, {Object: ref("b"), Action: apply.Created, Fields: []byte(owned)}}}, nil)
	if d.bytes != len(owned) {
		t.Fatalf("%d bytes kept, want %d", d.bytes, len(owned))
	}
	edited := []metav1.ManagedFieldsEntry{entry("deployd", metav1.ManagedFieldsOperationApply, `{"f:metadata":{}}`, t0), entry("kubectl", metav1.ManagedFieldsOperationUpdate, owned, t0)}
	d.Observe(live("a", edited...), false)
	d.Observe(live("b", edited...), false)
	want := []Object{{Ref: ref("a"), Fields: []Field{{Path: ".data.value", Manager: "kubectl"}}}}
	if diff := cmp.Diff(want, d.Repo(repo.Key()).Objects); diff != "" {
		t.Errorf("drift (-want +got):\n%s", diff)
	}
	d.Observe(live("b"), true)
	if got := d.Repo(repo.Key()).Objects; len(got) != 2 || !got[1].Deleted {
		t.Errorf("b's deletion is not drift: %+v", got)
	}
	d.Forget(repo.Key())
	if d.bytes != 0 {
		t.Errorf("%d bytes kept after forgetting the repo", d.bytes)
	}
}

// TestChangesDuringAnApply: an event seen while the repo is applied is drift when it is
// newer than the apply's result (a deletion after the object was applied), and not when
// older (the apply then overwrote it).
func TestChangesDuringAnApply(t *testing.T) {
	const owned = `{"f:data":{"f:value":{}}}`
	d := New(DefaultOptions())
	repo := config.Repo{Name: "shop/web", Namespace: "shop", Environment: "dev", Settings: config.Settings{Drift: config.DriftReport}}
	ref := func(name string) apply.Ref {
		return apply.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "shop", Name: name}
	}
	changes := []apply.Change{{Object: ref("a"), Action: apply.Created, Fields: []byte(owned), ResourceVersion: "10"},
		{Object: ref("b"), Action: apply.Created, Fields: []byte(owned), ResourceVersion: "20"}}
	d.Begin(repo)
	d.End(repo, "c1", apply.Result{Changes: changes}, nil)

	d.Begin(repo)
	gone := func(name, rv string) *unstructured.Unstructured {
		u := live(name)
		u.SetResourceVersion(rv)
		return u
	}
	d.Observe(gone("a", "12"), true) // deleted after its apply (rv 11)
	d.Observe(gone("b", "15"), true) // deleted before its apply (rv 21) recreated it
	changes[0].ResourceVersion, changes[1].ResourceVersion = "11", "21"
	d.End(repo, "c2", apply.Result{Changes: changes}, nil)
	want := []Object{{Ref: ref("a"), Deleted: true}}
	if diff := cmp.Diff(want, d.Repo(repo.Key()).Objects); diff != "" {
		t.Errorf("drift (-want +got):\n%s", diff)
	}
}
