package daemon

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

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/leader"
	"github.com/deployd/deployd/internal/view"
)

// roles lets two or more replicas share the work: the leader checks and deploys; a
// follower serves reads from the state ConfigMaps the leader writes, and hands the
// requests it receives (webhooks, API syncs) to the leader through them. Without
// leader election the one replica is the leader from the start.
type roles struct {
	ctl     *controller.Controller
	p       *parts
	handoff *leader.Handoff
	log     *slog.Logger

	leading atomic.Bool
	inbox   atomic.Pointer[leader.Inbox] // set when leading starts

	mu       sync.Mutex
	cfg      *config.Config
	byName   map[string]config.Key // state ConfigMap name -> repo, for cfg
	deployed map[config.Key]int    // the deployed record last watched, on a follower
	informer cache.SharedIndexInformer
}

func newRoles(ctl *controller.Controller, p *parts, kube kubernetes.Interface, namespace string, log *slog.Logger) *roles {
	return &roles{ctl: ctl, p: p, handoff: leader.NewHandoff(kube, namespace), log: log, deployed: map[config.Key]int{}}
}

// Enqueue queues the request on the leader, or hands it to the leader from a follower,
// within ctx (the request's): a follower that cannot write the handoff says so, and the
// webhook or API answers 503 so the sender tries again, instead of losing the request.
func (r *roles) Enqueue(ctx context.Context, key config.Key, req controller.Request) error {
	if r.leading.Load() {
		return controller.Local(r.ctl).Enqueue(ctx, key, req)
	}
	repo, ok := r.config().Repo(key)
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
func (r *roles) Config() *config.Config { return r.config() }

func (r *roles) config() *config.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg
}

// setConfig maps state ConfigMap names to the repos of cfg.
func (r *roles) setConfig(cfg *config.Config) {
	m := make(map[string]config.Key, len(cfg.Repos))
	for _, repo := range cfg.Repos {
		m[repo.StateName()] = repo.Key()
	}
	r.mu.Lock()
	r.cfg, r.byName = cfg, m
	r.mu.Unlock()
}

func (r *roles) repoOf(name string) (config.Repo, bool) {
	r.mu.Lock()
	key, ok := r.byName[name]
	cfg := r.cfg
	r.mu.Unlock()
	if !ok {
		return config.Repo{}, false
	}
	return cfg.Repo(key)
}

// watchStates starts an informer on deployd's state ConfigMaps: a follower's view and a
// leader's requests come from it.
func (r *roles) watchStates(ctx context.Context, kube kubernetes.Interface, namespace string) error {
	factory := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = apply.LabelManagedBy + "=" + apply.ManagedByValue }))
	inf := factory.Core().V1().ConfigMaps().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.onState(ctx, obj) },
		UpdateFunc: func(_, obj any) { r.onState(ctx, obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if cm, ok := obj.(*corev1.ConfigMap); ok {
				r.p.states.ObserveDeleted(cm.Name)
			}
		},
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.informer = inf
	r.mu.Unlock()
	factory.Start(ctx.Done())
	return nil
}

// onState takes a state ConfigMap another writer changed: a follower shows it; the
// leader acts on the requests handed to it and on a pause set through a follower.
func (r *roles) onState(ctx context.Context, obj any) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return
	}
	repo, ok := r.repoOf(cm.Name)
	if !ok {
		return
	}
	changed := r.p.states.Observe(cm)
	if r.leading.Load() {
		if in := r.inbox.Load(); in != nil {
			for _, req := range in.Take(cm) {
				r.ctl.Enqueue(repo.Key(), req)
			}
		}
		if changed {
			r.followPause(ctx, repo)
		}
		return
	}
	if changed {
		r.show(ctx, repo)
	}
}

// followPause applies a pause state stored by another replica.
func (r *roles) followPause(ctx context.Context, repo config.Repo) {
	pause, err := r.p.store.Pause(ctx, repo)
	if err != nil {
		r.log.Warn("could not read a pause state another replica stored; it applies at its next change", "repo", repo.Name, "env", repo.Environment, "err", err)
		return
	}
	e, ok := r.p.view.Entry(repo.Key())
	if !ok || (pause.Paused == e.Pause.Paused && pause.Reason == e.Pause.Reason) {
		return
	}
	r.ctl.SetPaused(repo.Key(), pause.Paused)
	r.p.view.SetPause(repo.Key(), view.Pause(pause))
	r.log.Info("pause state changed through another replica", "repo", repo.Name, "env", repo.Environment, "paused", pause.Paused)
}

// show puts a repo's stored history and pause state in the view, on a follower, and
// watches the objects of a newly deployed record.
func (r *roles) show(ctx context.Context, repo config.Repo) {
	recs, err := r.p.store.List(ctx, repo)
	if err != nil {
		r.log.Warn("could not read the repo's history", "repo", repo.Name, "env", repo.Environment, "err", err)
		return
	}
	pause, err := r.p.store.Pause(ctx, repo)
	if err != nil {
		r.log.Warn("could not read the repo's pause state", "repo", repo.Name, "env", repo.Environment, "err", err)
		return
	}
	key := repo.Key()
	r.p.view.LoadHistory(key, recs)
	r.p.view.SetPause(key, view.Pause(pause))
	e, ok := r.p.view.Entry(key)
	if !ok {
		return
	}
	dep, ok := e.Deployed()
	if !ok {
		return
	}
	r.mu.Lock()
	seen := r.deployed[key] == dep.Number
	r.deployed[key] = dep.Number
	r.mu.Unlock()
	if !seen {
		r.p.watchDeployed(repo, r.log)
	}
}

// follow fills the view from the state ConfigMaps at a follower's start.
func (r *roles) follow(ctx context.Context, cfg *config.Config) {
	if err := r.p.preload(ctx, cfg); err != nil {
		r.log.Warn("could not list the state ConfigMaps; the history shows once the leader writes it", "err", err)
	}
	for _, repo := range cfg.Repos {
		r.show(ctx, repo)
	}
}

// lead makes this replica the leader: the history is recovered (interrupted deployments
// are redone), requests handed over lately are acted on, and the work queue runs until
// ctx ends.
func (r *roles) lead(ctx context.Context, cfg *config.Config, since time.Time) []config.Key {
	r.inbox.Store(leader.NewInbox(since))
	redo := r.p.recoverHistory(ctx, r.ctl, cfg, r.log)
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
