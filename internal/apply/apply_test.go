package apply

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/render"
	"github.com/deployd/deployd/internal/simcluster"
)

var env *simcluster.Env

func TestMain(m *testing.M) { os.Exit(simcluster.Main(m, &env)) }

// setup returns an applier keeping state in a namespace of its own, and a repo
// deploying into another.
func setup(t *testing.T) (*Applier, config.Repo) {
	t.Helper()
	opts := DefaultOptions()
	opts.StateNamespace = env.Namespace(t)
	a, err := New(env.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	repo := config.Repo{Name: "shop/web", Namespace: env.Namespace(t), Environment: "dev", CreateNamespace: true,
		Settings: config.Settings{Branch: "main", Path: "deploy", Prune: true}}
	return a, repo
}

// objects renders YAML documents as if they were files of the repo.
func objects(t *testing.T, files map[string]string) []render.Object {
	t.Helper()
	m := map[string][]byte{}
	for k, v := range files {
		m["deploy/"+k] = []byte(v)
	}
	objs, err := render.Render(context.Background(), m, "deploy", render.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func configMap(name, value string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\ndata: {value: %q}\n", name, value)
}

func deployment(name, app string, replicas int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %s}
spec:
  replicas: %d
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s}}
    spec: {containers: [{name: web, image: "nginx:1.27"}]}
`, name, replicas, app, app)
}

func actions(res Result) []string {
	var out []string
	for _, c := range res.Changes {
		out = append(out, string(c.Action)+" "+c.Object.String())
	}
	sort.Strings(out)
	return out
}

func get(t *testing.T, gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	t.Helper()
	return dynamicFor(t).Resource(gvr).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
}

var (
	cmGVR     = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	deployGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
)

func TestApplyLabelsAndReportsChanges(t *testing.T) {
	a, repo := setup(t)
	ctx := context.Background()
	objs := objects(t, map[string]string{"cm.yaml": configMap("settings", "1"), "web.yaml": deployment("web", "web", 2)})
	res, err := a.Apply(ctx, Request{Repo: repo, Commit: "abc123", Number: 7, Objects: objs})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"created ConfigMap/" + repo.Namespace + "/settings", "created Deployment/" + repo.Namespace + "/web"}
	if got := actions(res); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("changes %v, want %v", got, want)
	}
	cm, err := get(t, cmGVR, repo.Namespace, "settings")
	if err != nil {
		t.Fatal(err)
	}
	if l := cm.GetLabels(); l[LabelManagedBy] != "deployd" || l[LabelRepo] != "shop.web" || l[LabelEnvironment] != "dev" {
		t.Errorf("labels %v", l)
	}
	if an := cm.GetAnnotations(); an[AnnotationCommit] != "abc123" || an[AnnotationDeployment] != "7" {
		t.Errorf("annotations %v", an)
	}
	for _, mf := range cm.GetManagedFields() {
		if mf.Operation == metav1.ManagedFieldsOperationApply && mf.Manager != "deployd" {
			t.Errorf("applied by field manager %q", mf.Manager)
		}
	}

	t.Run("applying again changes nothing", func(t *testing.T) {
		res, err := a.Apply(ctx, Request{Repo: repo, Commit: "abc123", Number: 7, Objects: objs})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range res.Changes {
			if c.Action != Unchanged {
				t.Errorf("second apply: %s %s", c.Action, c.Object)
			}
		}
	})
}

func TestValidationAppliesNothing(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		allow bool
		want  []string
	}{{
		name:  "an object in another namespace is rejected with the rest",
		files: map[string]string{"a.yaml": configMap("fine", "1"), "b.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: elsewhere, namespace: kube-system}\n"},
		want:  []string{`deploy/b.yaml:1: ConfigMap/kube-system/elsewhere: namespace "kube-system" is not the repo's namespace`},
	}, {
		name:  "a cluster-scoped object is refused",
		files: map[string]string{"a.yaml": configMap("fine", "1"), "role.yaml": "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: deployd-test-escalate}\nrules: []\n"},
		want:  []string{"deploy/role.yaml:1: ClusterRole/deployd-test-escalate: ClusterRole is cluster-scoped; the repo may apply only namespaced objects unless repos.yaml sets allowClusterScoped: true for it"},
	}, {
		name:  "an unknown kind is named",
		files: map[string]string{"a.yaml": configMap("fine", "1"), "x.yaml": "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"},
		want:  []string{"deploy/x.yaml:1: Widget/w: kind example.com/v1 Widget is not known to the API server (is its CRD installed?)"},
	}, {
		name:  "two objects with one identity",
		files: map[string]string{"a.yaml": configMap("fine", "1"), "b.yaml": configMap("fine", "2")},
		want:  []string{"deploy/b.yaml:1: ConfigMap/fine: defined twice (first at deploy/a.yaml:1): keep one"},
	}, {
		name: "the server-side dry run reports every rejected object",
		files: map[string]string{
			"a.yaml":    configMap("fine", "1"),
			"bad1.yaml": strings.Replace(deployment("one", "one", 1), "replicas: 1", "replicas: three", 1),
			"bad2.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: svc}\nspec: {ports: [{port: 99999}]}\n",
		},
		want: []string{"deploy/bad1.yaml:1: Deployment/", "deploy/bad2.yaml:1: Service/"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, repo := setup(t)
			repo.AllowClusterScoped = tt.allow
			_, err := a.Apply(context.Background(), Request{Repo: repo, Commit: "c", Objects: objects(t, tt.files)})
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v, want a ValidationError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error:\n%v\nwant it to contain %q", err, w)
				}
			}
			if len(ve.Problems) != len(tt.want) {
				t.Errorf("%d problems, want %d:\n%v", len(ve.Problems), len(tt.want), err)
			}
			if _, err := get(t, cmGVR, repo.Namespace, "fine"); !apierrors.IsNotFound(err) {
				t.Errorf("ConfigMap fine exists (err %v): something was applied", err)
			}
		})
	}
}

func TestClusterScopedWhenAllowed(t *testing.T) {
	a, repo := setup(t)
	repo.AllowClusterScoped = true
	name := repo.Namespace + "-reader"
	files := map[string]string{"role.yaml": "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: " + name + "}\nrules: []\n"}
	if _, err := a.Apply(context.Background(), Request{Repo: repo, Commit: "c", Objects: objects(t, files)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Client.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	if _, err := env.Client.RbacV1().ClusterRoles().Get(context.Background(), name, metav1.GetOptions{}); err != nil {
		t.Error(err)
	}
}

func TestCreatesTheNamespace(t *testing.T) {
	a, repo := setup(t)
	repo.Namespace = "created-" + repo.Namespace[len(repo.Namespace)-6:]
	t.Cleanup(func() {
		_ = env.Client.CoreV1().Namespaces().Delete(context.Background(), repo.Namespace, metav1.DeleteOptions{})
	})
	res, err := a.Apply(context.Background(), Request{Repo: repo, Commit: "c", Objects: objects(t, map[string]string{"a.yaml": configMap("x", "1")})})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := env.Client.CoreV1().Namespaces().Get(context.Background(), repo.Namespace, metav1.GetOptions{})
	if err != nil || !res.NamespaceCreated || ns.Labels[LabelCreatedNamespace] != "true" ||
		ns.Labels["pod-security.kubernetes.io/warn"] != "restricted" || ns.Labels["pod-security.kubernetes.io/audit"] != "restricted" ||
		ns.Labels["pod-security.kubernetes.io/enforce"] != "" {
		t.Errorf("namespace %v (created %v), err %v", ns.Labels, res.NamespaceCreated, err)
	}
	enforced := repo
	enforced.Namespace, enforced.EnforcePodSecurity = "enforced-"+repo.Namespace, true
	t.Cleanup(func() {
		_ = env.Client.CoreV1().Namespaces().Delete(context.Background(), enforced.Namespace, metav1.DeleteOptions{})
	})
	if _, err := a.Apply(context.Background(), Request{Repo: enforced, Commit: "c", Objects: objects(t, map[string]string{"a.yaml": configMap("x", "1")})}); err != nil {
		t.Fatal(err)
	}
	ns, err = env.Client.CoreV1().Namespaces().Get(context.Background(), enforced.Namespace, metav1.GetOptions{})
	if err != nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("with enforcePodSecurity: namespace %v, err %v", ns.Labels, err)
	}
	repo.Namespace, repo.CreateNamespace = "absent-"+repo.Namespace, false
	_, err = a.Apply(context.Background(), Request{Repo: repo, Commit: "c", Objects: objects(t, map[string]string{"a.yaml": configMap("x", "1")})})
	if err == nil || !strings.Contains(err.Error(), "createNamespace: false") {
		t.Errorf("with createNamespace false: %v", err)
	}
}

func TestPrune(t *testing.T) {
	a, repo := setup(t)
	ctx := context.Background()
	apply := func(a *Applier, files map[string]string) Result {
		t.Helper()
		res, err := a.Apply(ctx, Request{Repo: repo, Commit: "c", Objects: objects(t, files)})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	keep := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keep, annotations: {deployd.dev/prune: disabled}}\n"
	apply(a, map[string]string{"old.yaml": configMap("old-name", "1"), "keep.yaml": keep, "foreign.yaml": configMap("relabelled", "1")})
	// Someone takes an object over: it no longer carries deployd's labels.
	cm, _ := env.Client.CoreV1().ConfigMaps(repo.Namespace).Get(ctx, "relabelled", metav1.GetOptions{})
	cm.Labels = map[string]string{"owner": "someone-else"}
	if _, err := env.Client.CoreV1().ConfigMaps(repo.Namespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("the renamed object is pruned after the new one exists", func(t *testing.T) {
		res := apply(a, map[string]string{"new.yaml": configMap("new-name", "1")})
		got := actions(res)
		want := []string{
			"created ConfigMap/" + repo.Namespace + "/new-name",
			"prune skipped ConfigMap/" + repo.Namespace + "/keep",
			"prune skipped ConfigMap/" + repo.Namespace + "/relabelled",
			"pruned ConfigMap/" + repo.Namespace + "/old-name",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if res.Changes[0].Action != Created {
			t.Errorf("first change %v: the new object must be created before anything is deleted", res.Changes[0])
		}
		for _, name := range []string{"keep", "relabelled"} {
			if _, err := get(t, cmGVR, repo.Namespace, name); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		// Deletion is foreground: the garbage collector removes the object shortly after.
		gone := func(ctx context.Context) (bool, error) {
			_, err := get(t, cmGVR, repo.Namespace, "old-name")
			return apierrors.IsNotFound(err), nil
		}
		if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, gone); err != nil {
			t.Errorf("old-name still there after 30 s: %v", err)
		}
	})
	t.Run("a restarted deployd prunes from the stored inventory", func(t *testing.T) {
		fresh, err := New(env.Config, a.opts)
		if err != nil {
			t.Fatal(err)
		}
		res := apply(fresh, map[string]string{"other.yaml": configMap("other", "1")})
		if got := actions(res); !contains(got, "pruned ConfigMap/"+repo.Namespace+"/new-name") {
			t.Errorf("changes %v: want new-name pruned", got)
		}
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestImpersonationIsBoundByRBAC(t *testing.T) {
	a, repo := setup(t)
	ctx := context.Background()
	repo.ServiceAccount = "deployer"
	if _, err := env.Client.CoreV1().ServiceAccounts(repo.Namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "deployer"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	objs := objects(t, map[string]string{"a.yaml": configMap("settings", "1")})
	_, err := a.Apply(ctx, Request{Repo: repo, Commit: "c", Objects: objs})
	if err == nil || !strings.Contains(err.Error(), `User "system:serviceaccount:`+repo.Namespace+`:deployer" cannot patch resource "configmaps"`) {
		t.Fatalf("apply as a ServiceAccount without rights: %v", err)
	}
	if _, err := get(t, cmGVR, repo.Namespace, "settings"); !apierrors.IsNotFound(err) {
		t.Errorf("ConfigMap applied despite RBAC: %v", err)
	}
	// Grant it ConfigMaps in its namespace: now the same apply works.
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "cm"}, Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "patch", "create", "update", "delete"}}}}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "cm"}, RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "cm"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "deployer", Namespace: repo.Namespace}}}
	if _, err := env.Client.RbacV1().Roles(repo.Namespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.RbacV1().RoleBindings(repo.Namespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The API server's authorizer learns of the binding from its own watch, a moment later.
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               "system:serviceaccount:" + repo.Namespace + ":deployer",
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: repo.Namespace, Verb: "patch", Resource: "configmaps"}}}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := wait.PollUntilContextCancel(wctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		got, err := env.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		return err == nil && got.Status.Allowed, nil
	}); err != nil {
		t.Fatal("the RoleBinding never took effect")
	}
	if _, err := a.Apply(ctx, Request{Repo: repo, Commit: "c", Objects: objs}); err != nil {
		t.Errorf("apply with rights: %v", err)
	}
}

func TestImmutableFieldChange(t *testing.T) {
	a, repo := setup(t)
	ctx := context.Background()
	if _, err := a.Apply(ctx, Request{Repo: repo, Commit: "1", Objects: objects(t, map[string]string{"web.yaml": deployment("web", "web", 1)})}); err != nil {
		t.Fatal(err)
	}
	changed := deployment("web", "web-v2", 1)
	_, err := a.Apply(ctx, Request{Repo: repo, Commit: "2", Objects: objects(t, map[string]string{"web.yaml": changed})})
	if err == nil || !strings.Contains(err.Error(), "spec.selector") || !strings.Contains(err.Error(), `annotate it deployd.dev/recreate: "true"`) {
		t.Fatalf("immutable change: %v", err)
	}
	withOptIn := strings.Replace(changed, "metadata: {name: web}", "metadata: {name: web, annotations: {deployd.dev/recreate: \"true\"}}", 1)
	res, err := a.Apply(ctx, Request{Repo: repo, Commit: "3", Objects: objects(t, map[string]string{"web.yaml": withOptIn})})
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(res); len(got) != 1 || got[0] != "recreated Deployment/"+repo.Namespace+"/web" {
		t.Errorf("changes %v", got)
	}
	d, err := get(t, deployGVR, repo.Namespace, "web")
	if err != nil {
		t.Fatal(err)
	}
	if sel, _, _ := unstructured.NestedString(d.Object, "spec", "selector", "matchLabels", "app"); sel != "web-v2" {
		t.Errorf("selector after recreation = %q", sel)
	}
}

func TestKustomizeOverlayPerEnvironment(t *testing.T) {
	files := map[string][]byte{
		"deploy/base/kustomization.yaml":          []byte("resources: [cm.yaml]\n"),
		"deploy/base/cm.yaml":                     []byte(configMap("settings", "base")),
		"deploy/overlays/dev/kustomization.yaml":  []byte("resources: [../../base]\npatches:\n- patch: |\n    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: settings}\n    data: {value: dev}\n"),
		"deploy/overlays/prod/kustomization.yaml": []byte("resources: [../../base]\npatches:\n- patch: |\n    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: settings}\n    data: {value: prod}\n"),
	}
	for _, envName := range []string{"dev", "prod"} {
		t.Run(envName, func(t *testing.T) {
			a, repo := setup(t)
			repo.Environment, repo.Path = envName, "deploy/overlays/{environment}"
			objs, err := render.Render(context.Background(), files, repo.ManifestPath(), render.DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.Apply(context.Background(), Request{Repo: repo, Commit: "c", Objects: objs}); err != nil {
				t.Fatal(err)
			}
			cm, err := get(t, cmGVR, repo.Namespace, "settings")
			if err != nil {
				t.Fatal(err)
			}
			if v, _, _ := unstructured.NestedString(cm.Object, "data", "value"); v != envName {
				t.Errorf("value %q, want %q", v, envName)
			}
		})
	}
}

func TestRealisticApp(t *testing.T) {
	a, repo := setup(t)
	files := map[string]string{}
	for i := range 12 {
		name := fmt.Sprintf("svc%02d", i)
		files[name+".yaml"] = deployment(name, name, 1) + "---\n" +
			fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: %s}\nspec: {selector: {app: %s}, ports: [{port: 80}]}\n", name, name) + "---\n" +
			configMap(name+"-config", "v1")
	}
	files["db.yaml"] = `apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: "postgres:17"}]}
`
	files["hpa.yaml"] = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: svc00}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: svc00}\n  minReplicas: 1\n  maxReplicas: 3\n  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}}]\n"
	files["cron.yaml"] = "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\nspec:\n  schedule: '0 3 * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec: {restartPolicy: OnFailure, containers: [{name: job, image: busybox}]}\n"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := a.Apply(ctx, Request{Repo: repo, Commit: "c", Objects: objects(t, files)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != 39 {
		t.Errorf("%d changes, want 39 objects created", len(res.Changes))
	}
	for _, c := range res.Changes {
		if c.Action != Created {
			t.Errorf("%s: %s", c.Object, c.Action)
		}
	}
}

func dynamicFor(t *testing.T) dynamic.Interface {
	t.Helper()
	d, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRebuildsAMissingInventory(t *testing.T) {
	a, repo := setup(t)
	ctx := context.Background()
	apply := func(a *Applier, repo config.Repo, commit string, files map[string]string) Result {
		t.Helper()
		res, err := a.Apply(ctx, Request{Repo: repo, Commit: commit, Objects: objects(t, files)})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	// Objects of another repo, and of another environment of this repo, in the same namespace.
	other := repo
	other.Name = "shop/other"
	prod := repo
	prod.Environment = "prod"
	apply(a, other, "o1", map[string]string{"cm.yaml": configMap("other-repo", "1")})
	apply(a, prod, "p1", map[string]string{"cm.yaml": configMap("prod-only", "1")})
	svc := "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n"
	first := apply(a, repo, "c1", map[string]string{"a.yaml": configMap("a", "1"), "svc.yaml": svc, "b.yaml": configMap("b", "1")})
	if first.Rebuilt != nil {
		t.Errorf("first deployment of a new repo: rebuilt %+v, want nothing found", *first.Rebuilt)
	}
	// The EndpointSlice controller copies the Service's labels, deployd's among them.
	copied := func(ctx context.Context) (bool, error) {
		l, err := env.Client.DiscoveryV1().EndpointSlices(repo.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelRepo + "=shop.web"})
		return err == nil && len(l.Items) > 0, nil
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, copied); err != nil {
		t.Fatalf("no EndpointSlice carries the Service's labels: %v", err)
	}
	// Someone copies a deployd object by hand, labels and all: deployd never applied it.
	byHand := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "by-hand",
		Labels: map[string]string{LabelManagedBy: ManagedByValue, LabelRepo: "shop.web", LabelEnvironment: "dev"}}}
	if _, err := env.Client.CoreV1().ConfigMaps(repo.Namespace).Create(ctx, byHand, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.CoreV1().ConfigMaps(a.opts.StateNamespace).Delete(ctx, repo.StateName(), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The history records the next deployment before it is applied: it finds the
	// ConfigMap gone and creates it again, without the inventory.
	if _, err := history.NewStore(a.states, 10).Create(ctx, repo, history.Record{Phase: history.Applying}); err != nil {
		t.Fatal(err)
	}

	res := apply(a, repo, "c2", map[string]string{"a.yaml": configMap("a", "1"), "svc.yaml": svc})
	want := []string{
		"configured ConfigMap/" + repo.Namespace + "/a",
		"configured Service/" + repo.Namespace + "/web",
		"pruned ConfigMap/" + repo.Namespace + "/b",
	}
	if got := actions(res); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if res.Rebuilt == nil || res.Rebuilt.Objects != 3 || res.Rebuilt.Commit != "c1" {
		t.Fatalf("rebuilt %+v, want 3 objects of commit c1", res.Rebuilt)
	}
	if n := res.Rebuilt.Note(); !strings.Contains(n, "inventory rebuilt from 3 live objects") || !strings.Contains(n, "commit c1") {
		t.Errorf("note %q", n)
	}
	gone := func(ctx context.Context) (bool, error) {
		_, err := get(t, cmGVR, repo.Namespace, "b")
		return apierrors.IsNotFound(err), nil
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, gone); err != nil {
		t.Errorf("b still there after 30 s: %v", err)
	}
	for _, name := range []string{"a", "other-repo", "prod-only", "by-hand"} {
		if _, err := get(t, cmGVR, repo.Namespace, name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	t.Run("the rebuilt inventory is stored and used next time", func(t *testing.T) {
		res := apply(a, repo, "c3", map[string]string{"a.yaml": configMap("a", "1")})
		if res.Rebuilt != nil {
			t.Errorf("rebuilt again: %+v", *res.Rebuilt)
		}
		if got := actions(res); !contains(got, "pruned Service/"+repo.Namespace+"/web") {
			t.Errorf("changes %v: want the Service pruned", got)
		}
	})
}
