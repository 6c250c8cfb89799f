package apply

import (
	"context"
	"errors"
	"fmt"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/deployd/deployd/internal/config"
)

// prune deletes objects that left the manifests: only those still labelled as this
// repo's by deployd, never those annotated deployd.dev/prune: disabled, never a
// namespace deployd created for the repo, and namespaces last. kept are the refs
// that could not be deleted and should stay in the inventory.
func (a *Applier) prune(ctx context.Context, dyn dynamic.Interface, repo config.Repo, gone []Ref) (changes []Change, kept []Ref, err error) {
	sort.SliceStable(gone, func(i, j int) bool { return gone[i].Kind != "Namespace" && gone[j].Kind == "Namespace" })
	var errs []error
	fg := metav1.DeletePropagationForeground
	for _, r := range gone {
		m, mapErr := a.mapping(schema.GroupVersionKind{Group: r.Group, Version: r.Version, Kind: r.Kind})
		if mapErr != nil {
			changes = append(changes, Change{Object: r, Action: PruneSkipped, Reason: "kind no longer served"})
			continue
		}
		res := a.resource(dyn, m, r.Namespace)
		live, err := res.Get(ctx, r.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: prune: %w", r, err))
			kept = append(kept, r)
			continue
		}
		if reason := keepReason(repo, r, live); reason != "" {
			changes = append(changes, Change{Object: r, Action: PruneSkipped, Reason: reason})
			continue
		}
		uid := live.GetUID()
		err = res.Delete(ctx, r.Name, metav1.DeleteOptions{PropagationPolicy: &fg, Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("%s: prune: %w", r, err))
			kept = append(kept, r)
			continue
		}
		changes = append(changes, Change{Object: r, Action: Pruned})
	}
	return changes, kept, errors.Join(errs...)
}

// keepReason says why live, which left the manifests, is not pruned; "" when it is.
func keepReason(repo config.Repo, r Ref, live *unstructured.Unstructured) string {
	labels := live.GetLabels()
	switch {
	case labels[LabelManagedBy] != ManagedByValue || labels[LabelRepo] != repoLabel(repo) || labels[LabelEnvironment] != repo.Environment:
		return "not labelled as this repo's by deployd"
	case live.GetAnnotations()[AnnotationPrune] == "disabled":
		return AnnotationPrune + ": disabled"
	case r.Kind == "Namespace" && r.Group == "" && labels[LabelCreatedNamespace] == "true":
		return "a namespace deployd created is never pruned"
	}
	return ""
}
