package rollout

import (
	"context"
	"fmt"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/cache"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/kube"
	"github.com/deployd/deployd/internal/panics"
)

// Tracked is an object's status and when it last changed.
type Tracked struct {
	ObjectStatus
	// Found is false while the object is not in the cluster (NotFound).
	Found bool `json:"found"`
	// Changed is when the status last changed.
	Changed time.Time `json:"changed"`
}

// Tracker watches every object labelled as deployd's, one informer per kind, started on
// first use. Its memory grows with what deployd manages, not with the cluster.
type Tracker struct {
	// Panicked, when set before Start, is told of a status computation that panicked
	// (err is a *panics.Error with the stack), with the object's key; the object's
	// status is then Unknown. A panic in a watch's event handler would end deployd.
	Panicked func(object string, err error)

	// compute is Compute; tests make it panic.
	compute func(*unstructured.Unstructured) ObjectStatus
	dyn     dynamic.Interface
	mapper  *restmapper.DeferredDiscoveryRESTMapper
	// selector limits the watches to what deployd applied.
	selector dynamicinformer.TweakListOptionsFunc

	mu       sync.Mutex
	ctx      context.Context
	watching map[schema.GroupVersionResource]cache.SharedIndexInformer
	statuses map[string]Tracked // by key(gvk kind, namespace, name)
	changed  chan struct{}
	version  uint64
	observe  func(u *unstructured.Unstructured, deleted bool)
}

// Observe has f see every watched object whole (managed fields and all) before the
// tracker slims it, and every deletion; f must not keep u. Call it before Start.
func (t *Tracker) Observe(f func(u *unstructured.Unstructured, deleted bool)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.observe = f
}

// Touch tells the tracker's watchers (Changed, Version) that something built from the
// statuses changed, e.g. an object's drift.
func (t *Tracker) Touch() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.version++
	close(t.changed)
	t.changed = make(chan struct{})
}

// NewTracker returns a tracker for the cluster cfg reaches; call Start before use.
func NewTracker(cfg *rest.Config) (*Tracker, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating a cluster client: %w", err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating a discovery client: %w", err)
	}
	selector := apply.LabelManagedBy + "=" + apply.ManagedByValue
	return &Tracker{
		compute: Compute,
		dyn:     dyn,
		mapper:  restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)),
		selector: func(o *metav1.ListOptions) {
			o.LabelSelector = selector
		},
		watching: map[schema.GroupVersionResource]cache.SharedIndexInformer{},
		statuses: map[string]Tracked{},
		changed:  make(chan struct{}),
	}, nil
}

// Start lets watches run until ctx ends; it returns at once.
func (t *Tracker) Start(ctx context.Context) {
	t.mu.Lock()
	t.ctx = ctx
	t.mu.Unlock()
}

func key(kind, namespace, name string) string { return kind + "/" + namespace + "/" + name }

func refKey(r apply.Ref) string {
	return key(schema.GroupKind{Group: r.Group, Kind: r.Kind}.String(), r.Namespace, r.Name)
}

// unwatched are kinds deployd is given no right to read across namespaces, whose
// rollout is their existence: Secrets, which it applies and has no use reading (k8s/
// grants it no cluster-wide read of them). Once applied, they count as Current.
var unwatched = map[schema.GroupKind]bool{{Kind: "Secret"}: true}

// Watch makes sure the kinds of refs are watched and their caches synced.
func (t *Tracker) Watch(ctx context.Context, refs []apply.Ref) error {
	for _, r := range refs {
		if unwatched[schema.GroupKind{Group: r.Group, Kind: r.Kind}] {
			continue
		}
		m, err := kube.Mapping(t.mapper, schema.GroupKind{Group: r.Group, Kind: r.Kind}, r.Version)
		if err != nil {
			return fmt.Errorf("watching %s: %w", r, err)
		}
		if err := t.watch(ctx, m.Resource); err != nil {
			return err
		}
	}
	return nil
}

func (t *Tracker) watch(ctx context.Context, gvr schema.GroupVersionResource) error {
	t.mu.Lock()
	inf, ok := t.watching[gvr]
	runCtx := t.ctx
	if !ok {
		if runCtx == nil {
			t.mu.Unlock()
			return fmt.Errorf("rollout tracker is not running")
		}
		// No index: nothing looks objects up by namespace (a namespace index cost 3 MB
		// at 10,000 objects). The watch ends with runCtx.
		inf = dynamicinformer.NewFilteredDynamicInformer(t.dyn, gvr, metav1.NamespaceAll, 0, cache.Indexers{}, t.selector).Informer()
		// Thousands of cached objects must stay small: the watch keeps of each object
		// its identity and the status computed as it arrived, not the object.
		observe := t.observe
		_ = inf.SetTransform(func(o any) (any, error) {
			u, ok := o.(*unstructured.Unstructured)
			if !ok {
				return o, nil // already transformed
			}
			if observe != nil {
				observe(u, false)
			}
			return t.shrink(u), nil
		})
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { t.update(o, false) },
			UpdateFunc: func(_, o any) { t.update(o, false) },
			DeleteFunc: func(o any) { t.update(o, true) },
		})
		t.watching[gvr] = inf
		go inf.Run(runCtx.Done())
	}
	t.mu.Unlock()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return fmt.Errorf("watching %s: cache not synced: %w", gvr, ctx.Err())
	}
	return nil
}

// cached is what a watch keeps of an object: its identity and its status, computed
// from the whole object when it arrived. An unstructured object, even slimmed of its
// managed fields, annotations, data and pod templates, took about 2.6 KB of maps each:
// 26 MB of deployd's heap at 10,000 objects. The status is all deployd reads of it.
type cached struct {
	metav1.PartialObjectMetadata
	status ObjectStatus
}

// DeepCopyObject copies the identity; the status is never changed once computed.
func (c *cached) DeepCopyObject() runtime.Object {
	out := &cached{status: c.status}
	c.PartialObjectMetadata.DeepCopyInto(&out.PartialObjectMetadata)
	return out
}

// shrink computes u's status and returns what the watch keeps of it: nothing of its
// spec, data or Secret values.
func (t *Tracker) shrink(u *unstructured.Unstructured) *cached {
	c := &cached{}
	c.APIVersion, c.Kind = u.GetAPIVersion(), u.GetKind()
	c.Name, c.Namespace = u.GetName(), u.GetNamespace()
	c.UID, c.ResourceVersion, c.Generation = u.GetUID(), u.GetResourceVersion(), u.GetGeneration()
	c.status = t.computeSafely(key(u.GroupVersionKind().GroupKind().String(), c.Namespace, c.Name), u)
	return c
}

// unstructuredOf is the identity of a cached object, as the drift observer is told of a deletion.
func unstructuredOf(c *cached) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(c.APIVersion)
	u.SetKind(c.Kind)
	u.SetNamespace(c.Namespace)
	u.SetName(c.Name)
	u.SetUID(c.UID)
	u.SetResourceVersion(c.ResourceVersion)
	u.SetGeneration(c.Generation)
	return u
}

func (t *Tracker) update(o any, deleted bool) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	c, ok := o.(*cached)
	if !ok {
		return
	}
	if deleted {
		t.mu.Lock()
		observe := t.observe
		t.mu.Unlock()
		if observe != nil {
			observe(unstructuredOf(c), true)
		}
	}
	k := key(c.GroupVersionKind().GroupKind().String(), c.Namespace, c.Name)
	var next Tracked
	if deleted {
		next = Tracked{ObjectStatus: ObjectStatus{Status: NotFound, Message: "deleted"}}
	} else {
		next = Tracked{ObjectStatus: c.status, Found: true}
	}
	t.mu.Lock()
	prev, had := t.statuses[k]
	next.Changed = time.Now()
	if had && sameStatus(prev, next) {
		next.Changed = prev.Changed
	}
	t.statuses[k] = next
	t.version++
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

// computeSafely is compute behind a recover: it runs in a client-go event handler, where
// a panic ends the process. A panic leaves the object Unknown and is told to Panicked.
func (t *Tracker) computeSafely(k string, u *unstructured.Unstructured) (s ObjectStatus) {
	defer func() {
		if v := recover(); v != nil {
			err := panics.New(v)
			s = ObjectStatus{Status: Unknown, Generation: u.GetGeneration(), Message: "computing its status: " + err.Error()}
			if t.Panicked != nil {
				t.Panicked(k, err)
			}
		}
	}()
	return t.compute(u)
}

func sameStatus(a, b Tracked) bool {
	return a.Status == b.Status && a.Message == b.Message && a.Found == b.Found
}

// Get returns an object's last known status.
func (t *Tracker) Get(r apply.Ref) Tracked {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.statuses[refKey(r)]; ok {
		return s
	}
	if unwatched[schema.GroupKind{Group: r.Group, Kind: r.Kind}] {
		return Tracked{Found: true, ObjectStatus: ObjectStatus{Status: Current, Message: "applied (deployd does not watch " + r.Kind + "s)"}}
	}
	return Tracked{ObjectStatus: ObjectStatus{Status: NotFound, Message: "not in the cluster"}}
}

// Version grows at every status update of any watched object: what was built from the
// statuses may be kept while it stays the same.
func (t *Tracker) Version() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.version
}

// Changed returns a channel closed at the next status change of any watched object.
func (t *Tracker) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}

// Synced reports whether every started watch has its initial list; readiness waits for it.
func (t *Tracker) Synced() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, inf := range t.watching {
		if !inf.HasSynced() {
			return false
		}
	}
	return true
}
