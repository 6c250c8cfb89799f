package render

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	sigsyaml "sigs.k8s.io/yaml"
)

func objectsOf(t *testing.T, docs ...string) []Object {
	t.Helper()
	var out []Object
	for _, d := range docs {
		var m map[string]any
		if err := sigsyaml.Unmarshal([]byte(d), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, Object{Unstructured: &unstructured.Unstructured{Object: m}})
	}
	return out
}

func TestImages(t *testing.T) {
	objs := objectsOf(t,
		"kind: Deployment\nspec: {template: {spec: {initContainers: [{name: migrate, image: 'ghcr.io/acme/migrate:1'}], containers: [{name: web, image: 'ghcr.io/acme/web:1.4.2'}, {name: log, image: 'busybox'}]}}}",
		"kind: CronJob\nspec: {jobTemplate: {spec: {template: {spec: {containers: [{name: c, image: 'ghcr.io/acme/cron:2'}]}}}}}",
		"kind: Pod\nspec: {containers: [{name: p, image: 'busybox'}]}",
		"kind: StatefulSet\nspec: {template: {spec: {containers: [{name: db, image: 'postgres:16'}]}}}",
		"kind: DaemonSet\nspec: {template: {spec: {containers: [{name: agent, image: 'agent:3'}]}}}",
		"kind: Job\nspec: {template: {spec: {containers: [{name: once, image: 'once:1'}]}}}",
		"kind: ReplicaSet\nspec: {template: {spec: {containers: [{name: rs, image: 'rs:1'}]}}}",
		"kind: ConfigMap\ndata: {image: 'not-an-image:1'}",
		"kind: Deployment\nspec: {template: {spec: {containers: 'not a list'}}}",
	)
	got, err := Images(objs)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"agent:3", "busybox", "ghcr.io/acme/cron:2", "ghcr.io/acme/migrate:1", "ghcr.io/acme/web:1.4.2", "once:1", "postgres:16", "rs:1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("images (-want +got):\n%s", diff)
	}
}

func TestImagesBound(t *testing.T) {
	containers := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "{name: c%d, image: 'img:%d'},", i, i)
		}
		return "kind: Pod\nspec: {containers: [" + b.String() + "]}"
	}
	if got, err := Images(objectsOf(t, containers(MaxImages))); err != nil || len(got) != MaxImages {
		t.Errorf("%d images: got %d, %v; want them all", MaxImages, len(got), err)
	}
	if _, err := Images(objectsOf(t, containers(MaxImages+1))); err == nil || !strings.Contains(err.Error(), "more than 100 distinct images") {
		t.Errorf("%d images: err = %v, want the bound", MaxImages+1, err)
	}
}
