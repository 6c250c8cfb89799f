package preview

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/deployd/deployd/internal/apply"
)

func obj(t *testing.T, y string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(y), &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}

func deployment(replicas, image string) string {
	return `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, resourceVersion: "7", generation: 3}
spec:
  replicas: ` + replicas + `
  template:
    spec:
      containers: [{name: web, image: "` + image + `"}]
status: {replicas: 1}
`
}

func TestCompare(t *testing.T) {
	web := apply.Ref{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "shop", Name: "web"}
	cm := apply.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "shop", Name: "extra"}
	sec := apply.Ref{Version: "v1", Kind: "Secret", Namespace: "shop", Name: "creds"}
	old := apply.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "shop", Name: "old"}
	secret := func(v string) string {
		return "apiVersion: v1\nkind: Secret\nmetadata: {name: creds, namespace: shop}\ndata: {password: " + v + "}\n"
	}
	tests := []struct {
		name string
		dr   apply.DryRunResult
		want Changes
	}{
		{
			name: "a replica count and an image change, field by field",
			dr: apply.DryRunResult{Objects: []apply.Planned{{Object: web, Source: "web.yaml:1",
				Live: obj(t, deployment("1", "nginx:1.27")), After: obj(t, strings.Replace(deployment("2", "nginx:1.28"), `"7"`, `"8"`, 1))}}},
			want: Changes{Added: []ChangedObject{}, Pruned: []ChangedObject{},
				Changed: []ChangedObject{{Object: "Deployment/shop/web", APIVersion: "apps/v1", Source: "web.yaml:1", Fields: []FieldChange{
					{Path: "spec.replicas", From: "1", To: "2"},
					{Path: "spec.template.spec.containers[name=web].image", From: `"nginx:1.27"`, To: `"nginx:1.28"`},
				}}},
				Images: []ImageChange{{Object: "Deployment/shop/web", Container: "web", From: "nginx:1.27", To: "nginx:1.28"}}},
		},
		{
			name: "an object the apply leaves as it is counts as unchanged",
			dr: apply.DryRunResult{Objects: []apply.Planned{{Object: web, Source: "web.yaml:1",
				Live: obj(t, deployment("1", "nginx:1.27")), After: obj(t, strings.Replace(deployment("1", "nginx:1.27"), "generation: 3", "generation: 4", 1))}}},
			want: Changes{Added: []ChangedObject{}, Changed: []ChangedObject{}, Pruned: []ChangedObject{}, Images: []ImageChange{}, Unchanged: 1},
		},
		{
			name: "a new object is added, with its images, one not dry-run with why; a gone one pruned",
			dr: apply.DryRunResult{
				Objects: []apply.Planned{
					{Object: cm, Source: "cm.yaml:1", After: obj(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\n")},
					{Object: sec, Source: "s.yaml:1", NotChecked: apply.NotCheckedNamespace},
					{Object: web, Source: "web.yaml:1", After: obj(t, deployment("1", "nginx:1.27"))},
				},
				Pruned: []apply.Ref{old},
				Kept:   []apply.Change{{Object: sec, Action: apply.PruneSkipped, Reason: "deployd.dev/prune: disabled"}},
			},
			want: Changes{
				Added: []ChangedObject{{Object: "ConfigMap/shop/extra", APIVersion: "v1", Source: "cm.yaml:1"},
					{Object: "Secret/shop/creds", APIVersion: "v1", Source: "s.yaml:1", Note: apply.NotCheckedNamespace},
					{Object: "Deployment/shop/web", APIVersion: "apps/v1", Source: "web.yaml:1"}},
				Changed: []ChangedObject{}, Pruned: []ChangedObject{{Object: "ConfigMap/shop/old", APIVersion: "v1"}},
				Kept:   []ChangedObject{{Object: "Secret/shop/creds", APIVersion: "v1", Note: "deployd.dev/prune: disabled"}},
				Images: []ImageChange{{Object: "Deployment/shop/web", Container: "web", To: "nginx:1.27"}},
			},
		},
		{
			name: "a Secret's values are redacted",
			dr:   apply.DryRunResult{Objects: []apply.Planned{{Object: sec, Source: "s.yaml:1", Live: obj(t, secret("b2xk")), After: obj(t, secret("bmV3"))}}},
			want: Changes{Added: []ChangedObject{}, Pruned: []ChangedObject{}, Images: []ImageChange{},
				Changed: []ChangedObject{{Object: "Secret/shop/creds", APIVersion: "v1", Source: "s.yaml:1", Fields: []FieldChange{{Path: "data.password", From: redacted, To: redacted}}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Compare(tt.dr)); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestCompareBoundsFields(t *testing.T) {
	data := func(v string) string {
		var b strings.Builder
		b.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n")
		for i := range MaxFields + 1 {
			b.WriteString("  k" + strings.Repeat("x", i) + ": " + v + "\n")
		}
		return b.String()
	}
	ref := apply.Ref{Version: "v1", Kind: "ConfigMap", Name: "big"}
	got := Compare(apply.DryRunResult{Objects: []apply.Planned{{Object: ref, Live: obj(t, data("a")), After: obj(t, data("b"))}}})
	if len(got.Changed) != 1 || len(got.Changed[0].Fields) != MaxFields || got.Changed[0].MoreFields != 1 {
		t.Errorf("%d fields over the bound: got %+v", MaxFields+1, got.Changed)
	}
}

func TestMarkdown(t *testing.T) {
	res := Result{Environment: "prod", Commit: strings.Repeat("a", 40), State: StateDone, Changes: Changes{
		Added:   []ChangedObject{{Object: "ConfigMap/shop/extra", Source: "deploy/manifests/extra.yaml:1"}},
		Changed: []ChangedObject{{Object: "Deployment/shop/web", Fields: []FieldChange{{Path: "spec.replicas", From: "1", To: "2"}}}},
		Images:  []ImageChange{{Object: "Deployment/shop/web", Container: "web", From: "a|b", To: "c"}}, Unchanged: 3}}
	got := Markdown(res, "https://deployd.example.com/x", DefaultSummaryBytes)
	for _, want := range []string{"### deployd / prod — `aaaaaaaaaaaa`", "1 to add, 1 to change, 0 to prune, 3 unchanged", "| 1 | 1 | 0 | 3 |",
		"| `Deployment/shop/web` | `spec.replicas` | `1` | `2` |", "| `ConfigMap/shop/extra` | deploy/manifests/extra.yaml:1 |", "`a\\|b`", "[The full diff](https://deployd.example.com/x)"} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "left out") {
		t.Errorf("a small summary left rows out:\n%s", got)
	}
}

func TestMarkdownIsCapped(t *testing.T) {
	var fields []FieldChange
	for range 2000 {
		fields = append(fields, FieldChange{Path: "data." + strings.Repeat("k", 40), From: strings.Repeat("v", 40), To: strings.Repeat("w", 40)})
	}
	res := Result{Environment: "prod", State: StateDone, Changes: Changes{Changed: []ChangedObject{{Object: "ConfigMap/shop/big", Fields: fields}}}}
	const limit = 10_000
	got := Markdown(res, "https://deployd.example.com/x", limit)
	if len(got) > limit || !strings.Contains(got, "more rows left out") || !strings.Contains(got, "[The full diff]") {
		t.Errorf("summary of %d bytes (cap %d) without the count of rows left out or the link:\n%s", len(got), limit, got[len(got)-200:])
	}
}

func TestCompareBoundsFieldsInAll(t *testing.T) {
	var dr apply.DryRunResult
	for i := range MaxAllFields/MaxFields + 1 {
		name := strings.Repeat("c", i+1)
		data := func(v string) string {
			var b strings.Builder
			b.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\ndata:\n")
			for j := range MaxFields {
				b.WriteString("  k" + strings.Repeat("x", j) + ": " + v + "\n")
			}
			return b.String()
		}
		dr.Objects = append(dr.Objects, apply.Planned{Object: apply.Ref{Version: "v1", Kind: "ConfigMap", Name: name}, Live: obj(t, data("a")), After: obj(t, data("b"))})
	}
	got := Compare(dr)
	listed, more := 0, 0
	for _, o := range got.Changed {
		listed, more = listed+len(o.Fields), more+o.MoreFields
	}
	if len(got.Changed) != MaxAllFields/MaxFields+1 || listed != MaxAllFields || more != MaxFields {
		t.Errorf("%d objects, %d fields listed, %d counted, want %d, %d, %d", len(got.Changed), listed, more, MaxAllFields/MaxFields+1, MaxAllFields, MaxFields)
	}
}

func TestRedacted(t *testing.T) {
	res := Result{Changes: Changes{Changed: []ChangedObject{
		{Object: "ConfigMap/shop/settings", APIVersion: "v1", Fields: []FieldChange{{Path: "data.value", From: `"1"`, To: `"2"`}, {Path: "metadata.labels.team", To: `"a"`}}},
		{Object: "Deployment/shop/web", APIVersion: "apps/v1", Fields: []FieldChange{
			{Path: "spec.template.spec.containers[name=web].env[name=TOKEN].value", From: `"a"`, To: `"b"`},
			{Path: "spec.template.spec.containers[name=web].env", To: `[{"name":"X","value":"y"}]`},
			{Path: "spec.replicas", From: "1", To: "2"}}},
	}}}
	want := []ChangedObject{
		{Object: "ConfigMap/shop/settings", APIVersion: "v1", Fields: []FieldChange{{Path: "data.value", From: redacted, To: redacted}, {Path: "metadata.labels.team", To: `"a"`}}},
		{Object: "Deployment/shop/web", APIVersion: "apps/v1", Fields: []FieldChange{
			{Path: "spec.template.spec.containers[name=web].env[name=TOKEN].value", From: redacted, To: redacted},
			{Path: "spec.template.spec.containers[name=web].env", To: redacted},
			{Path: "spec.replicas", From: "1", To: "2"}}},
	}
	got := res.Redacted()
	if diff := cmp.Diff(want, got.Changed); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	if res.Changed[0].Fields[0].From != `"1"` {
		t.Error("Redacted changed the result it was given")
	}
}

func TestMarkdownEscapesThePullRequestsText(t *testing.T) {
	res := Result{Environment: "prod", State: StateFailed, Problems: []ManifestProblem{{
		File: "deploy/x.yaml", Line: 3, Object: "ConfigMap/shop/x", Message: "bad | cell @octocat <img src=x> #12\nnext"}}}
	got := Markdown(res, "", DefaultSummaryBytes)
	for _, bad := range []string{"@octocat", "<img", "#12", "bad | cell"} {
		if strings.Contains(got, bad) {
			t.Errorf("summary carries %q unescaped:\n%s", bad, got)
		}
	}
	if !strings.Contains(got, "| `deploy/x.yaml` | 3 |") {
		t.Errorf("summary lacks the problem's row:\n%s", got)
	}
}
