package apply

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Drifted is an object an apply would change: deleted, or with the listed paths
// differing from what the manifests set.
type Drifted struct {
	Object  Ref
	Deleted bool
	Paths   []string
}

// maxPaths bounds the paths listed per drifted object.
const maxPaths = 20

// Drifted dry-runs req's objects (server-side apply with force, as an apply would) and
// returns those the apply would create or change, what watches cannot see (drift while
// deployd was down). Nothing is written; two requests per object, one at a time.
func (a *Applier) Drifted(ctx context.Context, req Request) ([]Drifted, error) {
	cl, err := a.clientFor(req.Repo)
	if err != nil {
		return nil, err
	}
	p, err := a.plan(req)
	if err != nil {
		return nil, err
	}
	var out []Drifted
	for _, it := range p.all() {
		if it.mapping == nil {
			continue
		}
		live, err := a.resource(cl.dyn, it.mapping, it.obj.GetNamespace()).Get(ctx, it.obj.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			out = append(out, Drifted{Object: it.ref(), Deleted: true})
			continue
		}
		if err != nil {
			return out, fmt.Errorf("%s: %w", it.ref(), err)
		}
		// The deployment number is the one that applied it, not a new one.
		ann := it.obj.GetAnnotations()
		if n, ok := live.GetAnnotations()[AnnotationDeployment]; ok {
			ann[AnnotationDeployment] = n
			it.obj.SetAnnotations(ann)
		}
		after, err := a.patch(ctx, cl.dyn, it, true)
		if err != nil {
			return out, fmt.Errorf("%s: dry run: %w", it.ref(), err)
		}
		if changed(it.obj.Object, live.Object, after.Object) {
			var paths []string
			diffPaths(it.obj.Object, live.Object, after.Object, "", &paths)
			sort.Strings(paths)
			out = append(out, Drifted{Object: it.ref(), Paths: paths})
		}
	}
	return out, nil
}

// diffPaths lists, as changed walks them, the paths where before and after differ
// (at most maxPaths).
func diffPaths(applied, before, after any, path string, out *[]string) {
	if len(*out) >= maxPaths {
		return
	}
	m, ok := applied.(map[string]any)
	if !ok {
		if !equality.Semantic.DeepEqual(before, after) {
			*out = append(*out, path)
		}
		return
	}
	bm, _ := before.(map[string]any)
	am, _ := after.(map[string]any)
	for k, v := range m {
		p := path + "." + k
		if strings.ContainsAny(k, ".[]") {
			p = path + "[" + k + "]"
		}
		diffPaths(v, bm[k], am[k], p, out)
	}
}
