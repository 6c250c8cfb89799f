package apply

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/metadata"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/panics"
)

// Rebuilt tells that a repo's state ConfigMap was deleted, with the inventory in it, and
// that the live objects deployd applied for the repo were taken as the previous
// deployment's instead, so what left the manifests is still pruned.
type Rebuilt struct {
	// Objects is how many live objects were found.
	Objects int
	// Commit is the deployd.dev/commit most of them carry: the commit deployed last.
	Commit string
	// Unlisted are the resource types that could not be listed (not allowed, or no
	// longer served): their objects, if any, are not pruned when they leave the manifests.
	Unlisted []string
}

// Note says what happened, for the deployment's record.
func (r Rebuilt) Note() string {
	n := fmt.Sprintf("inventory rebuilt from %d live objects labelled for this repo and environment: the state ConfigMap was deleted", r.Objects)
	if r.Commit != "" {
		n += "; they were last deployed at commit " + r.Commit
	}
	if len(r.Unlisted) > 0 {
		n += fmt.Sprintf("; %d resource types could not be listed, their objects are not pruned", len(r.Unlisted))
	}
	return n
}

// previous returns the inventory of the repo's previous deployment. When the state
// ConfigMap was deleted since it was read, and no inventory was stored since, it is
// rebuilt from the live objects, and res.Rebuilt says so if any were found.
//
// A ConfigMap that is merely missing is a new repo's: listing every resource type for
// each would cost a first deployment of many repos more than the deployment itself.
func (a *Applier) previous(ctx context.Context, cl clients, inv *inventory, res *Result) ([]Ref, error) {
	refs, stored, err := inv.load(ctx)
	if err != nil || stored || !a.states.Deleted(inv.repo.StateName()) {
		return refs, err
	}
	refs, rebuilt, err := a.rebuild(ctx, cl.meta, inv.repo)
	if err != nil {
		return nil, fmt.Errorf("rebuilding the missing inventory from live objects: %w", err)
	}
	if rebuilt.Objects > 0 {
		res.Rebuilt = &rebuilt
	}
	return refs, nil
}

// listType is one resource type to look for deployd's objects in.
type listType struct {
	gvr        schema.GroupVersionResource
	kind       string
	namespaced bool
}

func (t listType) String() string { return t.gvr.GroupResource().String() }

// rebuild lists, in every type deployd could have applied and could prune for the repo,
// the objects labelled as the repo and environment's and applied by deployd's field
// manager. Listing is bounded like applying, with the repo's identity.
func (a *Applier) rebuild(ctx context.Context, meta metadata.Interface, repo config.Repo) ([]Ref, Rebuilt, error) {
	types, unlisted, err := a.listTypes(ctx, repo)
	if err != nil {
		return nil, Rebuilt{}, err
	}
	found := make([][]metav1.PartialObjectMetadata, len(types))
	errs := make([]error, len(types))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(a.opts.Concurrency)
	for i, t := range types {
		g.Go(func() error {
			defer panics.Recover(&errs[i])
			found[i], errs[i] = listLabelled(gctx, meta, t, repo)
			return nil
		})
	}
	_ = g.Wait()
	var refs []Ref
	commits := map[string]int{}
	for i, t := range types {
		switch err := errs[i]; {
		case apierrors.IsForbidden(err) || apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err):
			unlisted = append(unlisted, t.String())
			continue
		case err != nil:
			return nil, Rebuilt{}, fmt.Errorf("listing %s: %w", t, err)
		}
		for _, o := range found[i] {
			r := Ref{Group: t.gvr.Group, Version: t.gvr.Version, Kind: t.kind, Namespace: o.Namespace, Name: o.Name}
			if a.isState(r, repo) || !appliedBy(o.ManagedFields, a.opts.FieldManager) {
				continue
			}
			refs = append(refs, r)
			commits[o.Annotations[AnnotationCommit]]++
		}
	}
	refs = union(refs, nil)
	sort.Strings(unlisted)
	return refs, Rebuilt{Objects: len(refs), Commit: mostCommon(commits), Unlisted: unlisted}, nil
}

// listTypes returns the preferred version of every resource type that can be listed and
// deleted: namespaced ones always, cluster-scoped ones when the repo may apply them.
// Groups whose discovery failed are returned as unlisted.
func (a *Applier) listTypes(ctx context.Context, repo config.Repo) ([]listType, []string, error) {
	lists, err := discovery.ServerPreferredResourcesWithContext(ctx, discovery.ToDiscoveryInterfaceWithContext(a.disco))
	var unlisted []string
	if failed, ok := discovery.GroupDiscoveryFailedErrorGroups(err); ok {
		for gv := range failed {
			unlisted = append(unlisted, gv.String())
		}
	} else if err != nil {
		return nil, nil, fmt.Errorf("discovering the API's resource types: %w", err)
	}
	var types []listType
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			// A subresource (deployments/status) is no object of its own.
			if strings.Contains(r.Name, "/") || !slices.Contains(r.Verbs, "list") || !slices.Contains(r.Verbs, "delete") {
				continue
			}
			if !r.Namespaced && !repo.AllowClusterScoped {
				continue
			}
			types = append(types, listType{gvr: gv.WithResource(r.Name), kind: r.Kind, namespaced: r.Namespaced})
		}
	}
	return types, unlisted, nil
}

// listLabelled lists one type's objects labelled as the repo and environment's; namespaced
// ones only in the repo's namespace, since plan confines them there.
func listLabelled(ctx context.Context, meta metadata.Interface, t listType, repo config.Repo) ([]metav1.PartialObjectMetadata, error) {
	sel := labels.Set{LabelManagedBy: ManagedByValue, LabelRepo: repoLabel(repo), LabelEnvironment: repo.Environment}
	opts := metav1.ListOptions{LabelSelector: labels.SelectorFromSet(sel).String(), Limit: 500}
	res := metadata.ResourceInterface(meta.Resource(t.gvr))
	if t.namespaced {
		res = meta.Resource(t.gvr).Namespace(repo.Namespace)
	}
	var out []metav1.PartialObjectMetadata
	for {
		list, err := res.List(ctx, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, list.Items...)
		if list.Continue == "" {
			return out, nil
		}
		opts.Continue = list.Continue
	}
}

// appliedBy reports whether manager applied fields of the object. Controllers copy labels
// onto objects of their own (a Service's onto its Endpoints and EndpointSlices): those
// carry deployd's labels but were never applied by it, and must not be pruned.
func appliedBy(fields []metav1.ManagedFieldsEntry, manager string) bool {
	for _, f := range fields {
		if f.Manager == manager && f.Operation == metav1.ManagedFieldsOperationApply {
			return true
		}
	}
	return false
}

// isState reports whether r is the repo's own state ConfigMap, which carries the repo's
// labels too (it is never applied, but a repo deploying into deployd's namespace must
// never prune it).
func (a *Applier) isState(r Ref, repo config.Repo) bool {
	return r.Group == "" && r.Kind == "ConfigMap" && r.Namespace == a.states.Namespace() && r.Name == repo.StateName()
}

// mostCommon returns the key counted most often (the smallest of equals), "" for none.
func mostCommon(counts map[string]int) string {
	best, n := "", 0
	for k, c := range counts {
		if k != "" && (c > n || c == n && k < best) {
			best, n = k, c
		}
	}
	return best
}
