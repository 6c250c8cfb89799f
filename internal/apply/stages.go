package apply

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/panics"
)

// prepare reads the repo's namespace and items in one round, then creates the namespace
// if it is missing (after beforeWrite). It reports whether it created the namespace.
func (a *Applier) prepare(ctx context.Context, dyn dynamic.Interface, repo config.Repo, items []*item, beforeWrite func() error) (bool, error) {
	var exists bool
	var nsErr, nsPanic error
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer panics.Recover(&nsPanic)
		exists, nsErr = a.namespaceExists(ctx, repo)
	}()
	readErr := a.read(ctx, dyn, items)
	<-done
	if err := errors.Join(nsPanic, nsErr, readErr); err != nil || exists {
		return false, err
	}
	if err := beforeWrite(); err != nil {
		return false, err
	}
	return a.createNamespace(ctx, repo)
}

// read reads items whose kind is served, all at once, to tell later what the apply
// changed; an object read is not read again before its apply. A read error other than
// NotFound is left to the apply, which reads that object again.
func (a *Applier) read(ctx context.Context, dyn dynamic.Interface, items []*item) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(a.opts.Concurrency)
	readPanic := make([]error, len(items))
	for i, it := range items {
		if it.mapping == nil || it.read {
			continue
		}
		g.Go(func() error {
			defer panics.Recover(&readPanic[i])
			before, err := a.resource(dyn, it.mapping, it.obj.GetNamespace()).Get(gctx, it.obj.GetName(), metav1.GetOptions{})
			switch {
			case err == nil:
				it.before, it.read = before, true
			case apierrors.IsNotFound(err):
				it.read = true
			}
			return nil // another error: read again before applying
		})
	}
	_ = g.Wait()
	return errors.Join(readPanic...)
}

// dryRun applies items with dryRun=All and reports every rejected object. Objects whose
// kind a CRD of the set defines cannot be checked before the CRD exists.
func (a *Applier) dryRun(ctx context.Context, dyn dynamic.Interface, items []*item) error {
	errs := make([]error, len(items))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(a.opts.Concurrency)
	// Each goroutine recovers its own panic: a panic there would end the process.
	dryPanic := make([]error, len(items))
	for i, it := range items {
		if it.mapping == nil {
			continue
		}
		g.Go(func() error {
			defer panics.Recover(&dryPanic[i])
			out, err := a.patch(gctx, dyn, it, true)
			// A dry-run create is not stored, so it has no resourceVersion yet.
			it.absent = err == nil && out.GetResourceVersion() == ""
			if err != nil && isImmutable(err) && it.recreate {
				return nil // it will be deleted and created
			}
			errs[i] = err
			return nil
		})
	}
	_ = g.Wait()
	if err := errors.Join(dryPanic...); err != nil {
		return err
	}
	return verdict(items, errs)
}

// verdict turns the dry run's errors into a *ValidationError listing every rejected
// object, or the first error that is no verdict on the manifests.
func verdict(items []*item, errs []error) error {
	verr := &ValidationError{}
	for i, err := range errs {
		if err != nil && !rejected(err) {
			// Not a verdict on the manifests: retrying the same ones may succeed.
			return fmt.Errorf("%s: %s: dry run: %w", items[i].source, items[i].ref(), err)
		}
		if err != nil {
			verr.add(items[i].source, items[i].ref().String(), explain(err))
		}
	}
	if len(verr.Problems) > 0 {
		return verr
	}
	return nil
}

// rejected reports whether the API server judged an object and refused it, rather than
// not answering: unreachable, timing out, overloaded, or not itself (a proxy's page). An
// Internal Error counts as a verdict: server-side apply answers a value of the wrong
// type ("failed to create typed patch object") with one.
func rejected(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	return !apierrors.IsServerTimeout(err) && !apierrors.IsTimeout(err) && !apierrors.IsTooManyRequests(err) &&
		!apierrors.IsServiceUnavailable(err) && !apierrors.IsUnexpectedServerError(err)
}

// explain says what the API server rejected, and for immutable fields how to opt in to recreation.
func explain(err error) string {
	msg := err.Error()
	if isImmutable(err) {
		msg += fmt.Sprintf("; to replace the object, annotate it %s: \"true\" (deployd then deletes and creates it)", AnnotationRecreate)
	}
	return msg
}

// isImmutable reports whether the API server refused a change to an immutable field.
// The API gives no reason code for it, only the cause's message.
func isImmutable(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || !apierrors.IsInvalid(err) {
		return false
	}
	if d := status.Status().Details; d != nil {
		for _, c := range d.Causes {
			if strings.Contains(c.Message, "immutable") {
				return true
			}
		}
	}
	return strings.Contains(status.Status().Message, "immutable")
}

func (a *Applier) patch(ctx context.Context, dyn dynamic.Interface, it *item, dryRun bool) (*unstructured.Unstructured, error) {
	data, err := it.obj.MarshalJSON()
	if err != nil {
		return nil, err
	}
	return a.resource(dyn, it.mapping, it.obj.GetNamespace()).Patch(ctx, it.obj.GetName(), types.ApplyPatchType, data, a.patchOptions(dryRun))
}

// stage is one step of an apply, in order: CRDs (waited for until Established), then
// Namespaces, then the rest, whose kinds the new CRDs may define.
type stage int

const (
	stageCRDs stage = iota
	stageNamespaces
	stageRest
)

// items returns the plan's objects applied in stage s.
func (p *plan) items(s stage) []*item {
	switch s {
	case stageCRDs:
		return p.crds
	case stageNamespaces:
		return p.namespaces
	default:
		return p.rest
	}
}

// applyStages applies CRDs (and waits for them), then Namespaces, then the rest.
func (a *Applier) applyStages(ctx context.Context, dyn dynamic.Interface, p *plan) ([]Change, error) {
	var changes []Change
	for _, s := range []stage{stageCRDs, stageNamespaces, stageRest} {
		items := p.items(s)
		if s == stageRest {
			if err := a.resolveDeferred(items); err != nil {
				return changes, err
			}
		}
		got, err := a.applyAll(ctx, dyn, items)
		changes = append(changes, got...)
		if err != nil {
			return changes, err
		}
		if s == stageCRDs && len(items) > 0 {
			if err := a.waitEstablished(ctx, items); err != nil {
				return changes, err
			}
		}
	}
	return changes, nil
}

// resolveDeferred maps kinds defined by the CRDs just applied.
func (a *Applier) resolveDeferred(items []*item) error {
	for _, it := range items {
		if it.mapping != nil {
			continue
		}
		m, err := a.mapping(it.obj.GroupVersionKind())
		if err != nil {
			return fmt.Errorf("%s: %s: kind not served after its CRD was established: %w", it.source, it.ref(), err)
		}
		it.mapping = m
	}
	return nil
}

// applyAll applies one stage concurrently, bounded, and reports each change.
func (a *Applier) applyAll(ctx context.Context, dyn dynamic.Interface, items []*item) ([]Change, error) {
	changes := make([]Change, len(items))
	errs := make([]error, len(items))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(a.opts.Concurrency)
	for i, it := range items {
		g.Go(func() error {
			defer panics.Recover(&errs[i])
			changes[i], errs[i] = a.applyOne(gctx, dyn, it)
			return nil
		})
	}
	_ = g.Wait()
	var failed []error
	var done []Change
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Errorf("%s: %s: apply: %w", items[i].source, items[i].ref(), err))
			continue
		}
		done = append(done, changes[i])
	}
	return done, errors.Join(failed...)
}

// applyAlone applies the set's one changed object before any other, in place of its dry
// run: the API server's refusal of it is a ValidationError, as the dry run's would be,
// since nothing was applied.
func (a *Applier) applyAlone(ctx context.Context, dyn dynamic.Interface, it *item) (c Change, err error) {
	defer panics.Recover(&err)
	c, err = a.applyOne(ctx, dyn, it)
	switch {
	case err == nil:
		return c, nil
	case rejected(err):
		return c, &ValidationError{Problems: []string{fmt.Sprintf("%s: %s: %s", it.source, it.ref(), explain(err))}}
	default:
		return c, fmt.Errorf("%s: %s: apply: %w", it.source, it.ref(), err)
	}
}

func (a *Applier) applyOne(ctx context.Context, dyn dynamic.Interface, it *item) (Change, error) {
	if it.mapping == nil {
		return Change{}, fmt.Errorf("kind %s has no REST mapping: it cannot be applied", gvkString(it.obj.GroupVersionKind()))
	}
	before := it.before
	if !it.absent && !it.read {
		var err error
		before, err = a.resource(dyn, it.mapping, it.obj.GetNamespace()).Get(ctx, it.obj.GetName(), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			before = nil
		case err != nil:
			return Change{}, err
		}
	}
	after, err := a.patch(ctx, dyn, it, false)
	if err != nil && isImmutable(err) && it.recreate && before != nil {
		return a.recreate(ctx, dyn, it, before)
	}
	if err != nil {
		return Change{}, err
	}
	c := Change{Object: it.ref(), Action: Configured, Generation: after.GetGeneration(), Fields: a.owned(after), ResourceVersion: after.GetResourceVersion()}
	switch {
	case before == nil:
		c.Action = Created
	case !changed(it.obj.Object, before.Object, after.Object):
		c.Action = Unchanged
	}
	return c, nil
}

// changed reports whether before and after differ anywhere the applied object sets a
// value: what controllers add on their own (status, a Deployment's revision annotation,
// defaults) and other managers' fields do not make an unchanged apply look configured,
// whenever they land. Lists are compared whole, as apply sets them.
func changed(applied, before, after any) bool {
	m, ok := applied.(map[string]any)
	if !ok {
		return !equality.Semantic.DeepEqual(before, after)
	}
	bm, _ := before.(map[string]any)
	am, _ := after.(map[string]any)
	for k, v := range m {
		if changed(v, bm[k], am[k]) {
			return true
		}
	}
	return false
}

// recreate deletes an object (waiting until it is gone) and applies it anew.
func (a *Applier) recreate(ctx context.Context, dyn dynamic.Interface, it *item, before *unstructured.Unstructured) (Change, error) {
	res := a.resource(dyn, it.mapping, it.obj.GetNamespace())
	uid := before.GetUID()
	fg := metav1.DeletePropagationForeground
	err := res.Delete(ctx, it.obj.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}, PropagationPolicy: &fg})
	if err != nil && !apierrors.IsNotFound(err) {
		return Change{}, fmt.Errorf("deleting for recreation: %w", err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		cur, err := res.Get(ctx, it.obj.GetName(), metav1.GetOptions{})
		return apierrors.IsNotFound(err) || (err == nil && cur.GetUID() != uid), nil
	})
	if err != nil {
		return Change{}, fmt.Errorf("waiting for the old object to be deleted: %w", err)
	}
	after, err := a.patch(ctx, dyn, it, false)
	if err != nil {
		return Change{}, fmt.Errorf("creating after deletion: %w", err)
	}
	return Change{Object: it.ref(), Action: Recreated, Generation: after.GetGeneration(), Fields: a.owned(after), ResourceVersion: after.GetResourceVersion()}, nil
}

// waitEstablished waits until every applied CRD is Established, so its kinds can be applied.
// A read the API server refuses (Forbidden, Unauthorized) ends the wait at once; other
// read errors are retried, and the last one is told if the wait times out.
func (a *Applier) waitEstablished(ctx context.Context, crds []*item) error {
	wctx, cancel := context.WithTimeout(ctx, a.opts.CRDTimeout)
	defer cancel()
	for _, it := range crds {
		if it.mapping == nil {
			return fmt.Errorf("%s: no REST mapping", it.ref())
		}
		res := a.resource(a.own.dyn, it.mapping, "")
		var lastErr error
		err := wait.PollUntilContextCancel(wctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			cur, err := res.Get(ctx, it.obj.GetName(), metav1.GetOptions{})
			if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
				return false, err
			}
			if err != nil {
				if told(ctx, err) {
					lastErr = err
				}
				return false, nil
			}
			return established(cur), nil
		})
		if err != nil {
			return establishedErr(ctx, it, a.opts.CRDTimeout, err, lastErr)
		}
	}
	a.mapper.Reset()
	return nil
}

// owned returns the fields deployd's apply owns in obj (its managedFields entry of
// operation Apply), as the API server serializes them, or nil.
func (a *Applier) owned(obj *unstructured.Unstructured) []byte {
	for _, mf := range obj.GetManagedFields() {
		if mf.Manager == a.opts.FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply && mf.FieldsV1 != nil && mf.Subresource == "" {
			return bytes.Clone(mf.FieldsV1.GetRawBytes())
		}
	}
	return nil
}

// established reports whether a CRD's Established condition is True.
func established(crd *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// told reports whether a failed read's error is worth telling if the wait times out: the
// API server's answer, or a transport error, but not the wait's own deadline (or the
// client's rate limiter foreseeing it) cutting the read short.
func told(ctx context.Context, err error) bool {
	var status apierrors.APIStatus
	var transport *url.Error
	return errors.As(err, &status) || (errors.As(err, &transport) && ctx.Err() == nil)
}

// establishedErr says why waiting for it to be Established ended: the caller's cancel, a
// refused read, or the timeout (with the last read error, if the reads failed).
func establishedErr(ctx context.Context, it *item, timeout time.Duration, err, lastErr error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%s: waiting until Established: %w", it.ref(), context.Cause(ctx))
	case !wait.Interrupted(err):
		return fmt.Errorf("%s: reading it while waiting until Established: %w", it.ref(), err)
	case lastErr != nil:
		return fmt.Errorf("%s: not Established within %v; the last read failed: %w", it.ref(), timeout, lastErr)
	default:
		return fmt.Errorf("%s: not Established within %v", it.ref(), timeout)
	}
}
