package leader

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/history"
)

// Replica is what the Router needs of this replica's own parts (the daemon's).
type Replica interface {
	// Enqueue queues a request on this replica's work queue, when it leads.
	Enqueue(ctx context.Context, key config.Key, req controller.Request) error
	// Observe takes a state ConfigMap the watch saw, and reports whether its content is
	// new to this replica; ObserveDeleted forgets a deleted one.
	Observe(cm *corev1.ConfigMap) bool
	ObserveDeleted(name string)
	// Preload reads the state ConfigMaps of cfg's repos with one list.
	Preload(ctx context.Context, cfg *config.Config) error
	// Recover reads every repo's history before the leader's first check, and returns
	// the repos whose deployment was interrupted, to redo.
	Recover(ctx context.Context, cfg *config.Config) []config.Key
	// FollowPause applies, on the leader, a pause state another replica stored.
	FollowPause(ctx context.Context, repo config.Repo)
	// Show puts, on a follower, a repo's stored history and pause state in its view.
	Show(ctx context.Context, repo config.Repo)
}

// Router lets two or more replicas share the work: the leader checks and deploys; a
// follower serves reads from the state ConfigMaps the leader writes, and hands the
// requests it receives (webhooks, API syncs) to the leader through them. Without
// leader election the one replica is the leader from the start.
type Router struct {
	local     Replica
	kube      kubernetes.Interface
	namespace string
	handoff   *Handoff
	log       *slog.Logger

	leading atomic.Bool
	inbox   atomic.Pointer[Inbox] // set when leading starts

	mu       sync.Mutex
	cfg      *config.Config
	byName   map[string]config.Key // state ConfigMap name -> repo, for cfg
	informer cache.SharedIndexInformer
}

// NewRouter returns a router for the state ConfigMaps in namespace; call SetConfig
// before use.
func NewRouter(local Replica, kube kubernetes.Interface, namespace string, log *slog.Logger) *Router {
	return &Router{local: local, kube: kube, namespace: namespace, handoff: NewHandoff(kube, namespace), log: log}
}

// Enqueue queues the request on the leader, or hands it to the leader from a follower,
// within ctx (the request's): a follower that cannot write the handoff says so, and the
// webhook or API answers 503 so the sender tries again, instead of losing the request.
// Leading reports whether this replica leads (only the leader corrects drift).
func (r *Router) Leading() bool { return r.leading.Load() }

func (r *Router) Enqueue(ctx context.Context, key config.Key, req controller.Request) error {
	if r.leading.Load() {
		return r.local.Enqueue(ctx, key, req)
	}
	repo, ok := r.Config().Repo(key)
	if !ok {
		return controller.ErrNotConfigured
	}
	ctx, cancel := context.WithTimeout(ctx, handoffTimeout)
	defer cancel()
	if err := r.handoff.Hand(ctx, repo.StateName(), history.Meta(repo), req); err != nil {
		r.log.Error("could not hand the request to the leader", "repo", repo.Name, "env", repo.Environment, "trigger", string(req.Trigger), "err", err)
		return fmt.Errorf("follower: %w", err)
	}
	return nil
}

// handoffTimeout bounds a follower's write of a request for the leader, within the
// server's 30 s write timeout.
const handoffTimeout = 10 * time.Second

// Config is the config in force.
func (r *Router) Config() *config.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg
}

// SetConfig maps state ConfigMap names to the repos of cfg.
func (r *Router) SetConfig(cfg *config.Config) {
	m := make(map[string]config.Key, len(cfg.Repos))
	for _, repo := range cfg.Repos {
		m[repo.StateName()] = repo.Key()
	}
	r.mu.Lock()
	r.cfg, r.byName = cfg, m
	r.mu.Unlock()
}

func (r *Router) repoOf(name string) (config.Repo, bool) {
	r.mu.Lock()
	key, ok := r.byName[name]
	cfg := r.cfg
	r.mu.Unlock()
	if !ok {
		return config.Repo{}, false
	}
	return cfg.Repo(key)
}

// WatchStates starts an informer on deployd's state ConfigMaps (those labelled
// selector), until ctx ends: a follower's view and a leader's requests come from it.
func (r *Router) WatchStates(ctx context.Context, selector string) error {
	factory := informers.NewSharedInformerFactoryWithOptions(r.kube, 0, informers.WithNamespace(r.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	inf := factory.Core().V1().ConfigMaps().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.onState(ctx, obj) },
		UpdateFunc: func(_, obj any) { r.onState(ctx, obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if cm, ok := obj.(*corev1.ConfigMap); ok {
				r.local.ObserveDeleted(cm.Name)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("watching the state ConfigMaps: %w", err)
	}
	r.mu.Lock()
	r.informer = inf
	r.mu.Unlock()
	factory.Start(ctx.Done())
	return nil
}

// onState takes a state ConfigMap another writer changed: a follower shows it; the
// leader acts on the requests handed to it and on a pause set through a follower.
func (r *Router) onState(ctx context.Context, obj any) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return
	}
	repo, ok := r.repoOf(cm.Name)
	if !ok {
		return
	}
	changed := r.local.Observe(cm)
	if r.leading.Load() {
		if in := r.inbox.Load(); in != nil {
			for _, req := range in.Take(cm) {
				_ = r.local.Enqueue(ctx, repo.Key(), req) // fails only for a repo that left the config
			}
		}
		if changed {
			r.local.FollowPause(ctx, repo)
		}
		return
	}
	if changed {
		r.local.Show(ctx, repo)
	}
}

// Follow fills the view from the state ConfigMaps at a follower's start.
func (r *Router) Follow(ctx context.Context, cfg *config.Config) {
	if err := r.local.Preload(ctx, cfg); err != nil {
		r.log.Warn("could not list the state ConfigMaps; the history shows once the leader writes it", "err", err)
	}
	for _, repo := range cfg.Repos {
		r.local.Show(ctx, repo)
	}
}

// Lead makes this replica the leader: the history is recovered (the interrupted
// deployments are returned, to redo), and the requests handed over since are acted on.
func (r *Router) Lead(ctx context.Context, cfg *config.Config, since time.Time) []config.Key {
	r.inbox.Store(NewInbox(since))
	redo := r.local.Recover(ctx, cfg)
	r.leading.Store(true)
	r.mu.Lock()
	inf := r.informer
	r.mu.Unlock()
	if inf != nil {
		for _, obj := range inf.GetStore().List() {
			r.onState(ctx, obj)
		}
	}
	return redo
}
