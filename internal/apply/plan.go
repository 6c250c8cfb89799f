package apply

import (
	"errors"
	"fmt"
	"sort"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/deployd/deployd/internal/kube"
	"github.com/deployd/deployd/internal/render"
)

// Ref identifies an object in the cluster.
type Ref struct {
	Group     string `json:"group,omitempty"`
	Version   string `json:"version"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// String is "Kind/namespace/name" or "Kind/name".
func (r Ref) String() string {
	if r.Namespace != "" {
		return r.Kind + "/" + r.Namespace + "/" + r.Name
	}
	return r.Kind + "/" + r.Name
}

// id is a Ref without its version: the same object under another version is the same object.
func (r Ref) id() string { return r.Group + "/" + r.Kind + "/" + r.Namespace + "/" + r.Name }

func refOf(u *unstructured.Unstructured) Ref {
	gvk := u.GroupVersionKind()
	return Ref{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind, Namespace: u.GetNamespace(), Name: u.GetName()}
}

// item is one object ready to apply.
type item struct {
	obj    *unstructured.Unstructured
	source string
	// mapping is nil for kinds a CRD of the same set defines; resolved after the CRD stage.
	mapping *meta.RESTMapping
	// namespaced is known even before mapping, from the CRD's scope.
	namespaced bool
	recreate   bool
	// absent is true when the dry run found no such object: it will be created, so there
	// is nothing to read first.
	absent bool
	// before is the live object read during the dry run (read is true once it was).
	before *unstructured.Unstructured
	read   bool
}

func (it *item) ref() Ref { return refOf(it.obj) }

// plan is the validated set, in apply stages.
type plan struct {
	crds, namespaces, rest []*item
}

func (p *plan) all() []*item {
	return append(append(append([]*item{}, p.crds...), p.namespaces...), p.rest...)
}

func (p *plan) refs() []Ref {
	var out []Ref
	for _, it := range p.all() {
		out = append(out, it.ref())
	}
	return out
}

var crdGK = schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}

// plan resolves each object's kind, confines it to the repo's namespace and labels it.
// Every problem is reported, and nothing is applied when there is one.
func (a *Applier) plan(req Request) (*plan, error) {
	verr := &ValidationError{}
	bad := func(o render.Object, format string, args ...any) {
		verr.add(o.Source, o.String(), fmt.Sprintf(format, args...))
	}
	defined := crdKinds(req.Objects)
	p := &plan{}
	seen := map[string]string{}
	for _, o := range req.Objects {
		if msg := redefines(o); msg != "" {
			bad(o, "%s", msg)
			continue
		}
		obj := o.DeepCopy()
		gvk := obj.GroupVersionKind()
		it := &item{obj: obj, source: o.Source}
		if scope, ok := defined[gvk.GroupKind()]; ok {
			it.namespaced = scope == "Namespaced"
		} else {
			m, err := a.mapping(gvk)
			if errors.Is(err, errNoMapping) {
				bad(o, "%v", err)
				continue
			}
			if err != nil && !meta.IsNoMatchError(err) {
				// Discovery failed (the API server is unreachable): no verdict on the kind.
				return nil, fmt.Errorf("%s: %s: resolving kind %s: %w", o.Source, o.String(), gvkString(gvk), err)
			}
			if err != nil {
				bad(o, "kind %s is not known to the API server (is its CRD installed?)", gvkString(gvk))
				continue
			}
			it.mapping, it.namespaced = m, m.Scope.Name() == meta.RESTScopeNameNamespace
		}
		switch ns := obj.GetNamespace(); {
		case it.namespaced && ns == "":
			obj.SetNamespace(req.Repo.Namespace)
		case it.namespaced && ns != req.Repo.Namespace:
			bad(o, "namespace %q is not the repo's namespace %q: drop metadata.namespace, or set it to %q", ns, req.Repo.Namespace, req.Repo.Namespace)
			continue
		case !it.namespaced && !req.Repo.AllowClusterScoped:
			bad(o, "%s is cluster-scoped; the repo may apply only namespaced objects unless repos.yaml sets allowClusterScoped: true for it", gvk.Kind)
			continue
		case !it.namespaced:
			obj.SetNamespace("")
		}
		id := refOf(obj).id()
		if first, dup := seen[id]; dup {
			bad(o, "defined twice (first at %s): keep one", first)
			continue
		}
		seen[id] = o.Source
		it.recreate = obj.GetAnnotations()[AnnotationRecreate] == "true"
		labelled(obj, req)
		switch {
		case it.mapping == nil && (gvk.GroupKind() == crdGK || gvk.Group == ""):
			// Only kinds of the set's own CRDs wait for a mapping, and they are applied last.
			bad(o, "kind %s has no REST mapping: a CustomResourceDefinition of the set may not define it", gvkString(gvk))
		case gvk.GroupKind() == crdGK:
			p.crds = append(p.crds, it)
		case gvk.Group == "" && gvk.Kind == "Namespace":
			p.namespaces = append(p.namespaces, it)
		default:
			p.rest = append(p.rest, it)
		}
	}
	if len(verr.Problems) > 0 {
		return nil, verr
	}
	return p, nil
}

// errNoMapping is a kind the mapper answered for without a mapping or a scope: applying
// it would dereference nil.
var errNoMapping = errors.New("no REST mapping")

// mapping resolves gvk, refreshing discovery once on a miss so new CRDs are found. It
// never returns a nil mapping (or one without a scope) without an error.
func (a *Applier) mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m, err := kube.Mapping(a.mapper, gvk.GroupKind(), gvk.Version)
	if err == nil && (m == nil || m.Scope == nil) {
		return nil, fmt.Errorf("kind %s: %w: it cannot be applied", gvkString(gvk), errNoMapping)
	}
	return m, err
}

// crdKinds returns the kinds the set's CRDs define, with their scope. A CRD that would
// redefine CustomResourceDefinition itself or a kind of the core group is left out (plan
// refuses it): those kinds always resolve through the API server.
func crdKinds(objs []render.Object) map[schema.GroupKind]string {
	out := map[schema.GroupKind]string{}
	for _, o := range objs {
		gk, ok := definedKind(o)
		if !ok || gk == crdGK || gk.Group == "" {
			continue
		}
		scope, _, _ := unstructured.NestedString(o.Object, "spec", "scope")
		out[gk] = scope
	}
	return out
}

// definedKind returns the kind a CustomResourceDefinition defines; ok is false for
// any other object.
func definedKind(o render.Object) (schema.GroupKind, bool) {
	if o.GroupVersionKind().GroupKind() != crdGK {
		return schema.GroupKind{}, false
	}
	group, _, _ := unstructured.NestedString(o.Object, "spec", "group")
	kind, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind")
	return schema.GroupKind{Group: group, Kind: kind}, true
}

// redefines says why a CustomResourceDefinition may not be applied because of the
// kind it defines, or "" when it may: a set never redefines CustomResourceDefinition
// itself (deployd would lose its way to apply CRDs, for every repo), nor a kind of the
// core group.
func redefines(o render.Object) string {
	gk, ok := definedKind(o)
	switch {
	case !ok:
		return ""
	case gk == crdGK:
		return "it defines the kind CustomResourceDefinition of group apiextensions.k8s.io itself: a repo may never redefine it; remove this object"
	case gk.Group == "":
		return fmt.Sprintf("it defines kind %s with an empty spec.group (the core group): set spec.group to a domain of your own", gk.Kind)
	}
	return ""
}

func gvkString(gvk schema.GroupVersionKind) string {
	if gvk.Group == "" {
		return gvk.Version + " " + gvk.Kind
	}
	return gvk.Group + "/" + gvk.Version + " " + gvk.Kind
}

func union(a, b []Ref) []Ref {
	seen := map[string]bool{}
	var out []Ref
	for _, r := range append(append([]Ref{}, a...), b...) {
		if !seen[r.id()] {
			seen[r.id()] = true
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id() < out[j].id() })
	return out
}

// minus returns the refs of a not in b.
func minus(a, b []Ref) []Ref {
	in := map[string]bool{}
	for _, r := range b {
		in[r.id()] = true
	}
	var out []Ref
	for _, r := range a {
		if !in[r.id()] {
			out = append(out, r)
		}
	}
	return out
}
