// Package apply makes the cluster match a repo's rendered manifests: it validates them
// (known kinds, namespace confinement, a server-side dry run of the whole set), applies
// them with server-side apply in stages, records what it applied, and prunes what left.
package apply

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/render"
	"github.com/deployd/deployd/internal/state"
)

// Labels and annotations deployd puts on what it applies.
const (
	LabelManagedBy       = "app.kubernetes.io/managed-by"
	ManagedByValue       = "deployd"
	LabelRepo            = "deployd.dev/repo"
	LabelEnvironment     = "deployd.dev/environment"
	AnnotationCommit     = "deployd.dev/commit"
	AnnotationDeployment = "deployd.dev/deployment"
	// AnnotationPrune set to "disabled" keeps an object when it leaves the manifests.
	AnnotationPrune = "deployd.dev/prune"
	// AnnotationRecreate set to "true" lets deployd delete and create an object whose
	// immutable fields changed.
	AnnotationRecreate = "deployd.dev/recreate"
	// LabelCreatedNamespace marks a namespace deployd created; it is never pruned.
	LabelCreatedNamespace = "deployd.dev/created-namespace"
)

// Options configure an Applier.
type Options struct {
	// FieldManager is the server-side apply field manager.
	FieldManager string
	// StateNamespace is deployd's own namespace, where inventories are kept.
	StateNamespace string
	// Concurrency bounds the objects of one stage applied at once.
	Concurrency int
	// CRDTimeout bounds the wait for applied CRDs to be Established.
	CRDTimeout time.Duration
	// States keeps the inventories; nil means a store of its own over StateNamespace.
	// deployd shares one with the history, which lives in the same ConfigMaps.
	States *state.Store
}

// DefaultOptions returns field manager "deployd", 16 objects at once, state in namespace "deployd".
func DefaultOptions() Options {
	return Options{FieldManager: "deployd", StateNamespace: "deployd", Concurrency: 16, CRDTimeout: time.Minute}
}

// Applier applies manifests to one cluster.
type Applier struct {
	opts   Options
	states *state.Store
	cfg    *rest.Config
	kube   kubernetes.Interface
	own    clients
	disco  discovery.CachedDiscoveryInterface
	mapper *restmapper.DeferredDiscoveryRESTMapper

	mu            sync.Mutex
	impersonating map[string]clients
	// accepted are the repos' last sets applied whole, so unchanged objects are not
	// dry-run again.
	accepted accepted
}

// clients reach the cluster as one identity: deployd's own, or a repo's ServiceAccount.
type clients struct {
	dyn dynamic.Interface
	// meta reads objects' metadata only, to list many kinds cheaply.
	meta metadata.Interface
}

func newClients(cfg *rest.Config) (clients, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return clients{}, err
	}
	// Listing every type warns of the deprecated ones, which deployd may not even use.
	quiet := rest.CopyConfig(cfg)
	quiet.WarningHandler = rest.NoWarnings{}
	meta, err := metadata.NewForConfig(quiet)
	if err != nil {
		return clients{}, err
	}
	return clients{dyn: dyn, meta: meta}, nil
}

// New returns an Applier for the cluster cfg reaches, as deployd's own identity.
func New(cfg *rest.Config, opts Options) (*Applier, error) {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating a cluster client: %w", err)
	}
	own, err := newClients(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating a cluster client: %w", err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating a discovery client: %w", err)
	}
	states := opts.States
	if states == nil {
		states = state.New(kube, opts.StateNamespace)
	}
	disco := memory.NewMemCacheClient(dc)
	return &Applier{
		opts: opts, states: states, cfg: cfg, kube: kube, own: own, disco: disco,
		mapper:        restmapper.NewDeferredDiscoveryRESTMapper(disco),
		impersonating: map[string]clients{},
	}, nil
}

// Request is one deployment's set of objects.
type Request struct {
	// Repo is the repo entry being deployed.
	Repo config.Repo
	// Commit is the deployed commit's SHA.
	Commit string
	// Number is the deployment's number (0 when not numbered).
	Number int
	// Recorded, when set, is waited for before the first write to the cluster, while
	// the reads and the dry run go on: it returns the deployment's number (set then as
	// each object's deployment annotation, in place of Number). Its error ends the
	// apply with nothing written.
	Recorded func() (int, error)
	// Objects are the rendered manifests.
	Objects []render.Object
}

// Action is what happened to one object.
type Action string

// The actions.
const (
	Created    Action = "created"
	Configured Action = "configured"
	Unchanged  Action = "unchanged"
	Recreated  Action = "recreated"
	Pruned     Action = "pruned"
	// PruneSkipped: an object left the manifests but was kept (opt-out or not deployd's).
	PruneSkipped Action = "prune skipped"
)

// Change is what happened to one object.
type Change struct {
	Object Ref    `json:"object"`
	Action Action `json:"action"`
	// Reason says why, for skipped prunes.
	Reason string `json:"reason,omitempty"`
	// Generation is the object's metadata.generation after the apply, so a watcher
	// knows when its cache has caught up.
	Generation int64 `json:"generation,omitempty"`
	// Fields are the fields deployd owns after the apply (its managed fields entry,
	// FieldsV1 JSON): what drift detection compares the live object with.
	Fields []byte `json:"-"`
	// ResourceVersion is the object's after the apply, so a watcher can tell older events.
	ResourceVersion string `json:"-"`
}

// Result lists every object's change, applied ones first, then pruned ones.
type Result struct {
	Changes []Change
	// NamespaceCreated is true when the repo's namespace was created.
	NamespaceCreated bool
	// Rebuilt is set when the state ConfigMap, inventory and all, was deleted and live
	// objects were found to rebuild the inventory from.
	Rebuilt *Rebuilt
}

// ValidationError lists every problem found before anything was applied.
type ValidationError struct {
	Problems []string
	// Issues are the same problems, each with where it is (for annotations on a pull request).
	Issues []Issue
}

// Issue is one problem found in validation: the object's source ("file:line", or
// "kustomize <dir>"), the object, and what is wrong.
type Issue struct {
	Source  string
	Object  string
	Message string
}

// add records a problem of the object from source.
func (e *ValidationError) add(source, object, msg string) {
	e.Problems = append(e.Problems, fmt.Sprintf("%s: %s: %s", source, object, msg))
	e.Issues = append(e.Issues, Issue{Source: source, Object: object, Message: msg})
}

func (e *ValidationError) Error() string {
	if len(e.Problems) == 1 {
		return e.Problems[0]
	}
	msg := fmt.Sprintf("%d problems, nothing applied:", len(e.Problems))
	for _, p := range e.Problems {
		msg += "\n  " + p
	}
	return msg
}

// Apply validates, applies and prunes. On a validation error nothing was applied.
func (a *Applier) Apply(ctx context.Context, req Request) (Result, error) {
	var res Result
	cl, err := a.clientFor(req.Repo)
	if err != nil {
		return res, err
	}
	dyn := cl.dyn
	plan, err := a.plan(req)
	if err != nil {
		return res, err
	}
	// The dry run judges what changed since the repo's last set the API server accepted
	// whole; the rest was judged then. One changed object needs none: it is applied
	// first and alone, so its refusal leaves everything as it was.
	changed, digests := a.accepted.changed(req.Repo, plan)
	alone := aloneIn(changed, plan)
	toRead := plan.all()
	if alone != nil {
		toRead = []*item{alone} // the others are read after it is applied
	}
	// Writes wait for the deployment's record (Recorded); the reads and the dry run do not.
	beforeWrite := func() error { return nil }
	if req.Recorded != nil {
		beforeWrite = sync.OnceValue(func() error { return numbered(plan, req.Recorded) })
	}
	// The previous inventory is read once the deployment is recorded: the record is
	// written in the same state ConfigMap, whose deletion the inventory's rebuild checks.
	inv := newInventory(a.states, req.Repo)
	var previous []Ref
	recordedPrevious := func() error {
		if err := beforeWrite(); err != nil {
			return err
		}
		var err error
		previous, err = a.previous(ctx, cl, inv, &res)
		return err
	}
	// One round trip: the namespace made sure of, and the objects read (to tell later
	// what the apply changed).
	if res.NamespaceCreated, err = a.prepare(ctx, dyn, req.Repo, toRead, beforeWrite); err != nil {
		return res, err
	}
	var first []Change
	rest := plan
	switch {
	case alone != nil && alone.read:
		if err := recordedPrevious(); err != nil {
			return res, err
		}
		// Nothing else goes to the API server meanwhile: the change lands first (a changed
		// Deployment starts rolling out), and each other object is read before its apply.
		c, err := a.applyAlone(ctx, dyn, alone)
		if err != nil {
			return res, err
		}
		first, rest = []Change{c}, plan.without(alone)
	default:
		// Several changed, or the one could not be read (its identity may not read it):
		// every object read, the changed ones judged by a dry run.
		if err := a.read(ctx, dyn, plan.all()); err != nil {
			return res, err
		}
		if len(changed) > 0 {
			if err := a.dryRun(ctx, dyn, changed); err != nil {
				return res, err
			}
		}
		if err := recordedPrevious(); err != nil {
			return res, err
		}
	}
	changes, err := a.applyStages(ctx, dyn, rest)
	res.Changes = append(first, changes...)
	if err != nil {
		// Judge the whole set again next time: what refused an object may refuse others.
		a.accepted.forget(req.Repo)
		return res, err
	}
	a.accepted.accept(req.Repo, digests)
	applied := plan.refs()
	// Until the prune is done, remember both sets: a crash now orphans nothing.
	if err := inv.save(ctx, union(applied, previous)); err != nil {
		return res, err
	}
	if !req.Repo.Prune {
		return res, nil
	}
	pruned, kept, err := a.prune(ctx, dyn, req.Repo, minus(previous, applied))
	res.Changes = append(res.Changes, pruned...)
	if saveErr := inv.save(ctx, union(applied, kept)); saveErr != nil {
		err = errors.Join(err, saveErr)
	}
	return res, err
}

// clientFor returns the clients to apply the repo with: impersonating its
// ServiceAccount when it names one.
func (a *Applier) clientFor(repo config.Repo) (clients, error) {
	if repo.ServiceAccount == "" {
		return a.own, nil
	}
	user := "system:serviceaccount:" + repo.Namespace + ":" + repo.ServiceAccount
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.impersonating[user]; ok {
		return c, nil
	}
	cfg := rest.CopyConfig(a.cfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	c, err := newClients(cfg)
	if err != nil {
		return clients{}, fmt.Errorf("creating a client impersonating %s: %w", user, err)
	}
	a.impersonating[user] = c
	return c, nil
}

// numbered waits for the deployment's number and sets it on every object of the plan.
func numbered(p *plan, recorded func() (int, error)) error {
	n, err := recorded()
	if err != nil || n <= 0 {
		return err
	}
	for _, it := range p.all() {
		ann := it.obj.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann[AnnotationDeployment] = strconv.Itoa(n)
		it.obj.SetAnnotations(ann)
	}
	return nil
}

// namespaceExists reads the repo's namespace.
func (a *Applier) namespaceExists(ctx context.Context, repo config.Repo) (bool, error) {
	_, err := a.kube.CoreV1().Namespaces().Get(ctx, repo.Namespace, metav1.GetOptions{})
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("reading namespace %s: %w", repo.Namespace, err)
	}
}

// createNamespace creates the repo's namespace, labelled as deployd's, when the repo allows it.
func (a *Applier) createNamespace(ctx context.Context, repo config.Repo) (bool, error) {
	if !repo.CreateNamespace {
		return false, fmt.Errorf("namespace %s does not exist, and the repo sets createNamespace: false: create it first", repo.Namespace)
	}
	labels := map[string]any{LabelManagedBy: ManagedByValue, LabelCreatedNamespace: "true", LabelRepo: repoLabel(repo)}
	for k, v := range podSecurityLabels(repo) {
		labels[k] = v
	}
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{
		"name":   repo.Namespace,
		"labels": labels,
	}}}
	_, err := a.own.dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(ctx, ns, metav1.CreateOptions{FieldManager: a.opts.FieldManager})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return false, fmt.Errorf("creating namespace %s: %w", repo.Namespace, err)
	}
	return true, nil
}

func repoLabel(repo config.Repo) string { return repo.LabelValue() }

// podSecurityLabels are the Pod Security Admission labels of a namespace deployd creates:
// the "restricted" profile warns (kubectl shows it) and audits, and enforces when the repo
// opts in with enforcePodSecurity. https://kubernetes.io/docs/concepts/security/pod-security-admission/
func podSecurityLabels(repo config.Repo) map[string]string {
	l := map[string]string{
		"pod-security.kubernetes.io/warn":  "restricted",
		"pod-security.kubernetes.io/audit": "restricted",
	}
	if repo.EnforcePodSecurity {
		l["pod-security.kubernetes.io/enforce"] = "restricted"
	}
	return l
}

// labelled sets deployd's labels and annotations on obj.
func labelled(obj *unstructured.Unstructured, req Request) {
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelManagedBy] = ManagedByValue
	labels[LabelRepo] = repoLabel(req.Repo)
	labels[LabelEnvironment] = req.Repo.Environment
	obj.SetLabels(labels)
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationCommit] = req.Commit
	if req.Number > 0 {
		ann[AnnotationDeployment] = strconv.Itoa(req.Number)
	}
	obj.SetAnnotations(ann)
}

func (a *Applier) resource(dyn dynamic.Interface, m *meta.RESTMapping, ns string) dynamic.ResourceInterface {
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return dyn.Resource(m.Resource).Namespace(ns)
	}
	return dyn.Resource(m.Resource)
}

func (a *Applier) patchOptions(dryRun bool) metav1.PatchOptions {
	opts := metav1.PatchOptions{FieldManager: a.opts.FieldManager, Force: ptrTrue()}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	return opts
}

func ptrTrue() *bool { t := true; return &t }

// Live reads an object from the cluster, as deployd's own identity.
func (a *Applier) Live(ctx context.Context, r Ref) (*unstructured.Unstructured, error) {
	m, err := a.mapping(schema.GroupVersionKind{Group: r.Group, Version: r.Version, Kind: r.Kind})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r, err)
	}
	return a.resource(a.own.dyn, m, r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
}
