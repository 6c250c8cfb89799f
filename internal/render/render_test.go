package render

import (
	"context"
	"errors"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func names(objs []Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.String()+" @"+o.Source)
	}
	return out
}

func TestPlain(t *testing.T) {
	files := map[string][]byte{
		"deploy/manifests/b/web.yaml": []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\n---\n# just a comment\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n"),
		"deploy/manifests/a.json":     []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg"},"data":{"port":"8080"}}`),
		"deploy/manifests/list.yml":   []byte("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ServiceAccount, metadata: {name: one}}\n- {apiVersion: v1, kind: ServiceAccount, metadata: {name: two}}\n"),
		"deploy/manifests/notes.txt":  []byte("not a manifest"),
		"deploy/other.yaml":           []byte("apiVersion: v1\nkind: Secret\nmetadata: {name: outside}\n"),
	}
	objs, err := Render(context.Background(), files, "deploy/manifests", DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"ConfigMap/cfg @deploy/manifests/a.json:1",
		"Deployment/web @deploy/manifests/b/web.yaml:1",
		"Service/web @deploy/manifests/b/web.yaml:8",
		"ServiceAccount/one @deploy/manifests/list.yml:1",
		"ServiceAccount/two @deploy/manifests/list.yml:1",
	}
	if diff := cmp.Diff(want, names(objs)); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
	if port, _, _ := unstructuredString(objs[0], "data", "port"); port != "8080" {
		t.Errorf("ConfigMap data.port = %q", port)
	}
}

func unstructuredString(o Object, fields ...string) (string, bool, error) {
	v, ok := o.Object[fields[0]].(map[string]any)
	if !ok {
		return "", false, nil
	}
	s, ok := v[fields[1]].(string)
	return s, ok, nil
}

func TestPlainErrors(t *testing.T) {
	tests := []struct {
		name, file, content, want string
	}{
		{"a YAML syntax error names its line", "m/web.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n", "m/web.yaml:4: YAML syntax error:"},
		{"an object without kind", "m/a.yaml", "apiVersion: v1\nmetadata: {name: x}\n", "m/a.yaml:1: no kind: every manifest needs apiVersion and kind"},
		{"an object without apiVersion", "m/a.yaml", "---\nkind: ConfigMap\nmetadata: {name: x}\n", "m/a.yaml:2: ConfigMap has no apiVersion: every manifest needs apiVersion and kind"},
		{"an object without a name", "m/a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "m/a.yaml:1: ConfigMap has no metadata.name"},
		{"a scalar document", "m/a.yaml", "just text\n", "m/a.yaml:1: a manifest must be a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Render(context.Background(), map[string][]byte{tt.file: []byte(tt.content)}, "m", DefaultLimits())
			var re *Error
			if !errors.As(err, &re) || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error %v, want it to start with %q", err, tt.want)
			}
		})
	}
}

var kustomizeRepo = map[string][]byte{
	"deploy/base/kustomization.yaml":          []byte("resources: [deployment.yaml]\n"),
	"deploy/base/deployment.yaml":             []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n"),
	"deploy/overlays/dev/kustomization.yaml":  []byte("resources: [../../base]\nnamePrefix: dev-\nconfigMapGenerator:\n- name: settings\n  literals: [LEVEL=debug]\n"),
	"deploy/overlays/prod/kustomization.yaml": []byte("resources: [../../base]\npatches:\n- target: {kind: Deployment, name: web}\n  patch: |\n    - op: replace\n      path: /spec/replicas\n      value: 3\n"),
}

func TestKustomizeOverlays(t *testing.T) {
	dev, err := Render(context.Background(), kustomizeRepo, "deploy/overlays/dev", DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range dev {
		got = append(got, o.GetKind()+"/"+o.GetName())
	}
	sort.Strings(got)
	if len(got) != 2 || got[1] != "Deployment/dev-web" || !strings.HasPrefix(got[0], "ConfigMap/dev-settings-") {
		t.Errorf("dev overlay rendered %v", got)
	}
	prod, err := Render(context.Background(), kustomizeRepo, "deploy/overlays/prod", DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if r, _, _ := unstructuredInt(prod[0], "spec", "replicas"); r != 3 {
		t.Errorf("prod replicas = %d, want 3", r)
	}
}

func unstructuredInt(o Object, fields ...string) (int64, bool, error) {
	spec, _ := o.Object[fields[0]].(map[string]any)
	v, ok := spec[fields[1]].(int64)
	return v, ok, nil
}

func TestKustomizeRefusesRemoteBases(t *testing.T) {
	files := map[string][]byte{"k/kustomization.yaml": []byte("resources:\n- deployment.yaml\n- https://github.com/kubernetes-sigs/kustomize//examples/multibases?ref=v3.3.1\n")}
	_, err := Render(context.Background(), files, "k", DefaultLimits())
	if err == nil || !strings.Contains(err.Error(), `k/kustomization.yaml:3: remote reference "https://github.com/kubernetes-sigs/kustomize//examples/multibases?ref=v3.3.1" is refused`) {
		t.Errorf("error %v", err)
	}
}

func TestKustomizeErrorsNameTheDirectory(t *testing.T) {
	files := map[string][]byte{"k/kustomization.yaml": []byte("resources: [missing.yaml]\n")}
	_, err := Render(context.Background(), files, "k", DefaultLimits())
	if err == nil || !strings.HasPrefix(err.Error(), "k: kustomize build:") || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("error %v", err)
	}
}
