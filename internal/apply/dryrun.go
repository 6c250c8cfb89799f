package apply

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/panics"
)

// Planned is one object of a set as a dry run of its apply answered.
type Planned struct {
	Object Ref
	// Source is where the object came from ("file:line").
	Source string
	// Live is the object in the cluster now; nil when it does not exist.
	Live *unstructured.Unstructured
	// After is what the apply would make of it; nil when it was not dry-run (NotChecked
	// says why).
	After *unstructured.Unstructured
	// NotChecked says why the object was not dry-run: its kind is defined by a
	// CustomResourceDefinition of the same set, or its namespace does not exist yet.
	NotChecked string
}

// Why an object is not dry-run.
const (
	NotCheckedCRD       = "not dry-run: its kind is defined by a CustomResourceDefinition of the same manifests"
	NotCheckedNamespace = "not dry-run: the namespace does not exist yet (deployd creates it at the first deployment)"
)

// DryRunResult is what applying a set would do, found without changing anything.
type DryRunResult struct {
	// Objects are the set's objects, in apply order.
	Objects []Planned
	// Pruned are the objects of the applied inventory an apply would prune.
	Pruned []Ref
	// Kept are those that left the manifests but would be kept, with the reason.
	Kept []Change
}

// DryRun answers what Apply would do with req, without a request that writes: the set
// is validated as Apply validates it (an object refused there, a cluster-scoped one or
// one in another namespace, is never sent), then every object is read and applied with
// dryRun=All as the repo's identity, and the stored inventory is compared with the set
// to tell what would be pruned. The namespace is not created and the inventory not
// rebuilt. A rejected object is a *ValidationError, as in Apply.
func (a *Applier) DryRun(ctx context.Context, req Request) (DryRunResult, error) {
	var res DryRunResult
	cl, err := a.clientFor(req.Repo)
	if err != nil {
		return res, err
	}
	p, err := a.plan(req)
	if err != nil {
		return res, err
	}
	previous, _, err := newInventory(a.states, req.Repo).load(ctx)
	if err != nil {
		return res, err
	}
	nsMissing, err := a.namespaceMissing(ctx, req.Repo)
	if err != nil {
		return res, err
	}
	items := p.all()
	res.Objects = make([]Planned, len(items))
	errs := make([]error, len(items))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(a.opts.Concurrency)
	for i, it := range items {
		res.Objects[i] = Planned{Object: it.ref(), Source: it.source}
		switch {
		case it.mapping == nil:
			res.Objects[i].NotChecked = NotCheckedCRD
			continue
		case nsMissing && it.namespaced:
			res.Objects[i].NotChecked = NotCheckedNamespace
			continue
		}
		g.Go(func() error {
			defer panics.Recover(&errs[i])
			res.Objects[i].Live, res.Objects[i].After, errs[i] = a.dryRunOne(gctx, cl.dyn, it)
			return nil
		})
	}
	_ = g.Wait()
	if err := verdict(items, errs); err != nil {
		return res, err
	}
	if req.Repo.Prune {
		res.Pruned, res.Kept, err = a.wouldPrune(ctx, cl.dyn, req, minus(previous, p.refs()))
	}
	return res, err
}

// namespaceMissing reports whether the repo's namespace does not exist yet: a new repo's
// objects cannot be dry-run into it, and Apply would create it. Without createNamespace
// it is Apply's error.
func (a *Applier) namespaceMissing(ctx context.Context, repo config.Repo) (bool, error) {
	_, err := a.kube.CoreV1().Namespaces().Get(ctx, repo.Namespace, metav1.GetOptions{})
	switch {
	case err == nil:
		return false, nil
	case !apierrors.IsNotFound(err):
		return false, fmt.Errorf("reading namespace %s: %w", repo.Namespace, err)
	case !repo.CreateNamespace:
		return true, fmt.Errorf("namespace %s does not exist, and the repo sets createNamespace: false: create it first", repo.Namespace)
	}
	return true, nil
}

// dryRunOne reads it and dry-runs its apply. The live object's commit and deployment
// annotations are kept: deployd's bookkeeping is not a change a preview should show.
func (a *Applier) dryRunOne(ctx context.Context, dyn dynamic.Interface, it *item) (live, after *unstructured.Unstructured, err error) {
	live, err = a.resource(dyn, it.mapping, it.obj.GetNamespace()).Get(ctx, it.obj.GetName(), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		live = nil
	case err != nil:
		return nil, nil, err
	default:
		ann := it.obj.GetAnnotations()
		for _, k := range []string{AnnotationCommit, AnnotationDeployment} {
			if v, ok := live.GetAnnotations()[k]; ok {
				ann[k] = v
			} else {
				delete(ann, k)
			}
		}
		it.obj.SetAnnotations(ann)
	}
	after, err = a.patch(ctx, dyn, it, true)
	return live, after, err
}

// wouldPrune tells which of gone prune would delete, and which it would keep.
func (a *Applier) wouldPrune(ctx context.Context, dyn dynamic.Interface, req Request, gone []Ref) (pruned []Ref, kept []Change, err error) {
	var errs []error
	for _, r := range gone {
		m, mapErr := a.mapping(schema.GroupVersionKind{Group: r.Group, Version: r.Version, Kind: r.Kind})
		if mapErr != nil {
			kept = append(kept, Change{Object: r, Action: PruneSkipped, Reason: "kind no longer served"})
			continue
		}
		live, err := a.resource(dyn, m, r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: reading it: %w", r, err))
		case keepReason(req.Repo, r, live) != "":
			kept = append(kept, Change{Object: r, Action: PruneSkipped, Reason: keepReason(req.Repo, r, live)})
		default:
			pruned = append(pruned, r)
		}
	}
	return pruned, kept, errors.Join(errs...)
}
