package render

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// chartRepo reads testdata/helm as a repo's files: deploy/chart (a chart with a vendored
// dependency in charts/ and a file:// one in deploy/common) and deploy/values.
func chartRepo(t testing.TB) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	root := filepath.Join("testdata", "helm")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(root, p)
		files[filepath.ToSlash(rel)] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func helmOptions(env string) Options {
	return Options{Limits: DefaultLimits(), Environment: env, Namespace: "shop", ReleaseName: "web",
		Capabilities: &Capabilities{KubeVersion: "v1.34.2", APIVersions: []string{"v1", "apps/v1", "apps/v1/Deployment"}}}
}

func field(t *testing.T, o Object, path ...string) string {
	t.Helper()
	v, _, err := unstructured.NestedFieldNoCopy(o.Object, path...)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(v)
}

func byName(objs []Object) map[string]Object {
	m := map[string]Object{}
	for _, o := range objs {
		m[o.String()] = o
	}
	return m
}

func TestHelmChart(t *testing.T) {
	res, err := RenderWith(context.Background(), chartRepo(t), "deploy/chart", helmOptions("dev"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&Chart{Name: "web", Version: "1.2.3", AppVersion: "4.5"}, res.Chart); diff != "" {
		t.Errorf("chart (-want +got):\n%s", diff)
	}
	if res.Renderer != RendererHelm {
		t.Errorf("renderer = %q, want helm", res.Renderer)
	}
	// The test hook's Pod is skipped, NOTES.txt and _helpers.tpl render nothing, and
	// extra.yaml renders nothing with extra: false.
	want := []string{
		"ConfigMap/web-cache @deploy/chart/charts/cache/templates/cm.yaml:1",
		"ConfigMap/web-common @deploy/common/templates/cm.yaml:1",
		"ConfigMap/web-cluster @deploy/chart/templates/capabilities.yaml:1",
		"Deployment/shop/web @deploy/chart/templates/deployment.yaml:1",
	}
	if diff := cmp.Diff(want, names(res.Objects)); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
	objs := byName(res.Objects)
	d := objs["Deployment/shop/web"]
	if got := field(t, d, "spec", "replicas"); got != "1" {
		t.Errorf("replicas = %s, want the chart's 1", got)
	}
	if got := field(t, d, "metadata", "labels", "app.kubernetes.io/instance"); got != "web" {
		t.Errorf(".Release.Name = %s, want web", got)
	}
	caps := objs["ConfigMap/web-cluster"]
	if diff := cmp.Diff(map[string]any{"kubeVersion": "v1.34.2", "hasApps": "true", "hasWidgets": "false", "chart": "web-1.2.3"}, caps.Object["data"]); diff != "" {
		t.Errorf(".Capabilities and .Chart (-want +got):\n%s", diff)
	}
	if got := field(t, objs["ConfigMap/web-cache"], "data", "size"); got != "small" {
		t.Errorf("vendored dependency's size = %s, want the parent's value small", got)
	}
	if got := field(t, objs["ConfigMap/web-common"], "data", "greeting"); got != "hello" {
		t.Errorf("file:// dependency's greeting = %s, want hello", got)
	}
}

func TestHelmValuesOrder(t *testing.T) {
	tests := []struct {
		name    string
		env     string
		values  []string
		set     map[string]any
		want    map[string]string // object → replicas/image or data.note
		missing string
	}{
		{name: "the chart's values", env: "dev",
			want: map[string]string{"replicas": "1", "image": "nginx:1.0"}, missing: "ConfigMap/web-extra"},
		{name: "values-{environment}.yaml beside Chart.yaml over values.yaml", env: "production",
			want: map[string]string{"replicas": "3", "image": "nginx:2.0"}, missing: "ConfigMap/web-extra"},
		{name: "the values list, {environment} replaced, over values-{environment}.yaml", env: "production",
			values: []string{"deploy/values/extra-{environment}.yaml"},
			want:   map[string]string{"replicas": "3", "image": "nginx:2.0", "note": "from the values list"}},
		{name: "set over every file", env: "production",
			values: []string{"deploy/values/extra-{environment}.yaml"},
			set:    map[string]any{"replicas": 5, "note": "set", "image": map[string]any{"repository": "registry.local/web"}},
			want:   map[string]string{"replicas": "5", "image": "registry.local/web:2.0", "note": "set"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := helmOptions(tt.env)
			opts.Values, opts.Set = tt.values, tt.set
			res, err := RenderWith(context.Background(), chartRepo(t), "deploy/chart", opts)
			if err != nil {
				t.Fatal(err)
			}
			objs := byName(res.Objects)
			d := objs["Deployment/shop/web"]
			got := map[string]string{
				"replicas": field(t, d, "spec", "replicas"),
				"image":    fmt.Sprint(d.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["image"]),
			}
			if extra, ok := objs["ConfigMap/web-extra"]; ok {
				got["note"] = field(t, extra, "data", "note")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}
		})
	}
}

// chartWith is a one-template chart in deploy/chart, with files added or replaced.
func chartWith(files map[string]string) map[string][]byte {
	out := map[string][]byte{
		"deploy/chart/Chart.yaml":             []byte("apiVersion: v2\nname: app\nversion: 0.1.0\n"),
		"deploy/chart/templates/service.yaml": []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}\n"),
	}
	for name, content := range files {
		out[name] = []byte(content)
	}
	return out
}

func TestHelmErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  Error
	}{
		{name: "a dependency from a chart repository is refused unless vendored",
			files: map[string]string{"deploy/chart/Chart.yaml": "apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n- name: redis\n  version: 18.0.0\n  repository: https://charts.bitnami.com/bitnami\n"},
			want:  Error{File: "deploy/chart/Chart.yaml", Line: 5, Msg: `dependency "redis" (repository "https://charts.bitnami.com/bitnami") is not vendored in charts/: deployd renders without network; run "helm dependency build" and commit charts/`}},
		{name: "an OCI dependency is refused unless vendored",
			files: map[string]string{"deploy/chart/Chart.yaml": "apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n- name: pg\n  version: 1.0.0\n  repository: oci://registry.example.com/charts\n"},
			want:  Error{File: "deploy/chart/Chart.yaml", Line: 5, Msg: `dependency "pg" (repository "oci://registry.example.com/charts") is not vendored in charts/: deployd renders without network; run "helm dependency build" and commit charts/`}},
		{name: "a file:// dependency outside the repo is refused",
			files: map[string]string{"deploy/chart/Chart.yaml": "apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n- name: up\n  version: 1.0.0\n  repository: file://../../../up\n"},
			want:  Error{File: "deploy/chart/Chart.yaml", Line: 5, Msg: `dependency "up": file://../../../up is outside the repo: deployd renders only what the commit holds`}},
		{name: "a file:// dependency on itself ends",
			files: map[string]string{"deploy/chart/Chart.yaml": "apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n- name: again\n  version: 0.1.0\n  repository: file://.\n"},
			want:  Error{File: "deploy/chart/Chart.yaml", Msg: "file:// dependencies nest deeper than 10 charts or load more than 100: simplify the chart"}},
		{name: "a template error names the template's file and line",
			files: map[string]string{"deploy/chart/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: {{ .Values.missing.deeper }}\n"},
			want:  Error{File: "deploy/chart/templates/cm.yaml", Line: 6, Msg: `helm template: executing "app/templates/cm.yaml" at <.Values.missing.deeper>: nil pointer evaluating interface {}.deeper`}},
		{name: "a template parse error names the template's file and line",
			files: map[string]string{"deploy/chart/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n{{ if }}\n"},
			want:  Error{File: "deploy/chart/templates/cm.yaml", Line: 5, Msg: `helm template: missing value for if`}},
		{name: "required names the template's file and line",
			files: map[string]string{"deploy/chart/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ required \"set name\" .Values.name }}\n"},
			want:  Error{File: "deploy/chart/templates/cm.yaml", Line: 4, Msg: `helm template: set name`}},
		{name: "a hook other than a test is refused",
			files: map[string]string{"deploy/chart/templates/migrate.yaml": "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n  annotations:\n    helm.sh/hook: pre-install,pre-upgrade\nspec: {}\n"},
			want:  Error{File: "deploy/chart/templates/migrate.yaml", Msg: `Job/migrate is a Helm hook (helm.sh/hook: pre-install,pre-upgrade): deployd does not run hooks; remove the annotation to apply it with the chart's other objects, or make the job part of the app`}},
		{name: "a rendered template that is not YAML",
			files: map[string]string{"deploy/chart/templates/bad.yaml": "apiVersion: v1\nkind: [\n"},
			want:  Error{File: "deploy/chart/templates/bad.yaml", Line: 2, Msg: "in the rendered template: YAML syntax error: sequence end token ']' not found"}},
		{name: "a values file whose aliases expand past the limit (billion laughs)",
			files: map[string]string{"deploy/chart/values-dev.yaml": laughs(9)},
			want:  Error{File: "deploy/chart/values-dev.yaml", Line: 1, Msg: "YAML aliases expand to more than 100000 nodes (excessive aliasing): write the values out"}},
		{name: "a values file of the list that is not in the commit",
			want: Error{File: "deploy/missing.yaml", Msg: `values file not in the commit (repos.yaml values: "deploy/missing.yaml"): commit it or remove it from values`}},
		{name: "a kubeVersion the cluster does not meet",
			files: map[string]string{"deploy/chart/Chart.yaml": "apiVersion: v2\nname: app\nversion: 0.1.0\nkubeVersion: \">=2.0.0\"\n"},
			want:  Error{File: "deploy/chart/Chart.yaml", Line: 4, Msg: "the chart needs Kubernetes >=2.0.0, and the cluster runs v1.34.2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := helmOptions("dev")
			if strings.HasPrefix(tt.name, "a values file") {
				opts.Values = []string{"deploy/missing.yaml"}
			}
			_, err := RenderWith(context.Background(), chartWith(tt.files), "deploy/chart", opts)
			var got *Error
			if !asRenderError(err, &got) {
				t.Fatalf("err = %v, want a render.Error", err)
			}
			if diff := cmp.Diff(tt.want, *got); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func asRenderError(err error, out **Error) bool {
	e, ok := err.(*Error)
	*out = e
	return ok
}

// TestHelmLimits: a chart whose templates loop is stopped by the render's limits, the
// same as a kustomization's.
func TestHelmLimits(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxObjects, lim.MaxBytes = 10, 1<<20
	tests := []struct {
		name     string
		template string
		want     string
	}{
		{name: "one object over the count",
			template: "{{ range until 11 }}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{{ . }}\n{{ end }}",
			want:     "deploy/chart: renders to more than the limit of 10 objects per repo: split the repo"},
		{name: "more bytes than the limit",
			template: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  a: {{ repeat 1048577 \"x\" }}\n",
			want:     "deploy/chart: renders to more than the limit of 1 MiB of objects: split the repo"},
		{name: "more memory than the worker may use",
			template: "{{ $s := \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\" }}{{ range until 24 }}{{ $s = printf \"%s%s\" $s $s }}{{ end }}{{ $s }}",
			want:     "deploy/chart: helm template used more than the memory limit of 256 MiB: make the chart smaller"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := chartWith(map[string]string{"deploy/chart/templates/loop.yaml": tt.template})
			opts := helmOptions("dev")
			opts.Limits = lim
			if strings.Contains(tt.name, "memory") {
				opts.Limits = DefaultLimits()
			}
			_, err := RenderWith(context.Background(), files, "deploy/chart", opts)
			if err == nil || err.Error() != tt.want {
				t.Errorf("err = %v, want %s", err, tt.want)
			}
		})
	}
}

// TestHelmNoNetwork: the worker's sockets are refused, so a values schema's remote
// $ref (which Helm fetches with its own HTTP client) fails instead of fetching.
func TestHelmNoNetwork(t *testing.T) {
	files := chartWith(map[string]string{
		"deploy/chart/values.schema.json": `{"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": "http://127.0.0.1:1/schema.json"}`,
	})
	_, err := RenderWith(context.Background(), files, "deploy/chart", helmOptions("dev"))
	if err == nil || !strings.Contains(err.Error(), "socket: operation not permitted") {
		t.Errorf("err = %v, want the schema's fetch refused by the sandbox", err)
	}
}

func TestHelmLookupIsEmpty(t *testing.T) {
	files := chartWith(map[string]string{"deploy/chart/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: seen\ndata:\n  found: {{ lookup \"v1\" \"Secret\" \"kube-system\" \"\" | len | quote }}\n  host: {{ getHostByName \"example.com\" | quote }}\n"})
	res, err := RenderWith(context.Background(), files, "deploy/chart", helmOptions("dev"))
	if err != nil {
		t.Fatal(err)
	}
	cm := byName(res.Objects)["ConfigMap/seen"]
	if diff := cmp.Diff(map[string]any{"found": "0", "host": ""}, cm.Object["data"]); diff != "" {
		t.Errorf("lookup and getHostByName (-want +got):\n%s", diff)
	}
}

// tgz packs files as `helm package` does: every path under one directory named for the chart.
func tgz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestHelmVendoredArchive: a dependency vendored as `helm dependency build` leaves it,
// a .tgz in charts/, is rendered with the parent's values for it.
func TestHelmVendoredArchive(t *testing.T) {
	files := chartWith(map[string]string{
		"deploy/chart/Chart.yaml":  "apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n- name: redis\n  version: 18.0.0\n  repository: oci://registry.example.com/charts\n",
		"deploy/chart/values.yaml": "redis: {port: 6380}\n",
	})
	files["deploy/chart/charts/redis-18.0.0.tgz"] = tgz(t, map[string]string{
		"redis/Chart.yaml":          "apiVersion: v2\nname: redis\nversion: 18.0.0\n",
		"redis/values.yaml":         "port: 6379\n",
		"redis/templates/svc.yaml":  "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}-redis\nspec:\n  ports: [{port: {{ .Values.port }}}]\n",
		"redis/templates/NOTES.txt": "redis is ready\n",
	})
	res, err := RenderWith(context.Background(), files, "deploy/chart", helmOptions("dev"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"Service/web-redis @deploy/chart/charts/redis/templates/svc.yaml:1", "Service/web @deploy/chart/templates/service.yaml:1"}
	if diff := cmp.Diff(want, names(res.Objects)); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
	if got := fmt.Sprint(byName(res.Objects)["Service/web-redis"].Object["spec"]); got != "map[ports:[map[port:6380]]]" {
		t.Errorf("the vendored chart's spec = %s, want the parent's port 6380", got)
	}
}

// TestHelmIgnore: files .helmignore names are not part of the chart, as with `helm
// template`: an ignored template is not rendered.
func TestHelmIgnore(t *testing.T) {
	files := chartWith(map[string]string{
		"deploy/chart/.helmignore":                "# editor files\n*.swp\nwip/\n",
		"deploy/chart/templates/wip/draft.yaml":   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: draft}\n",
		"deploy/chart/templates/service.yaml.swp": "not yaml: [",
	})
	res, err := RenderWith(context.Background(), files, "deploy/chart", helmOptions("dev"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"Service/web @deploy/chart/templates/service.yaml:1"}, names(res.Objects)); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
}

// TestHelmTimeout: a template that loops without end is stopped when the render's time
// is up, and the worker with it.
func TestHelmTimeout(t *testing.T) {
	files := chartWith(map[string]string{"deploy/chart/templates/spin.yaml": "{{ range until 2000000000 }}{{ end }}"})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := RenderWith(ctx, files, "deploy/chart", helmOptions("dev"))
	if want := "deploy/chart: helm template stopped: context deadline exceeded"; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}

// laughs is a "billion laughs" document of n levels, each ten aliases of the one before.
func laughs(n int) string {
	var b strings.Builder
	b.WriteString("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "l%d: &l%d [*l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	return b.String()
}

// TestHelmDependencyErrors: an error in a dependency's template names the file where it
// is in the repo: in charts/ for a vendored one, in its own directory for a file:// one.
func TestHelmDependencyErrors(t *testing.T) {
	tests := []struct{ file, want string }{
		{"deploy/chart/charts/cache/templates/cm.yaml", "deploy/chart/charts/cache/templates/cm.yaml:2: helm template: function \"nope\" not defined"},
		{"deploy/common/templates/cm.yaml", "deploy/common/templates/cm.yaml:2: helm template: function \"nope\" not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			files := chartRepo(t)
			files[tt.file] = []byte("apiVersion: v1\n{{ nope }}\n")
			_, err := RenderWith(context.Background(), files, "deploy/chart", helmOptions("dev"))
			if err == nil || err.Error() != tt.want {
				t.Errorf("err = %v, want %s", err, tt.want)
			}
		})
	}
}

// TestHelmKeep: an object Helm keeps when the chart drops it (resource-policy: keep) is
// one deployd does not prune.
func TestHelmKeep(t *testing.T) {
	files := chartWith(map[string]string{"deploy/chart/templates/pvc.yaml": "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\n  annotations: {helm.sh/resource-policy: keep}\nspec: {}\n"})
	res, err := RenderWith(context.Background(), files, "deploy/chart", helmOptions("dev"))
	if err != nil {
		t.Fatal(err)
	}
	got := byName(res.Objects)["PersistentVolumeClaim/data"].GetAnnotations()
	if diff := cmp.Diff(map[string]string{"helm.sh/resource-policy": "keep", "deployd.dev/prune": "disabled"}, got); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
}
