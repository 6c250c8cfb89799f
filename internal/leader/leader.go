// Package leader elects the one deployd replica that fetches and applies (a Lease, with
// client-go's leaderelection) and carries the other replicas' requests to it.
package leader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Options configure the election.
type Options struct {
	// Namespace and Name locate the Lease.
	Namespace, Name string
	// Identity names this replica in the Lease; empty means hostname and a random suffix.
	Identity string
	// LeaseDuration is how long a leader that stopped renewing keeps the lease: the
	// time a follower waits before taking over from a killed leader.
	LeaseDuration time.Duration
	// RenewDeadline is how long the leader keeps trying to renew before it gives up.
	RenewDeadline time.Duration
	// RetryPeriod is how often followers try to acquire the lease and the leader renews it.
	RetryPeriod time.Duration
}

// DefaultOptions are client-go's usual figures: a 15 s lease renewed every 2 s.
func DefaultOptions(namespace string) Options {
	return Options{Namespace: namespace, Name: "deployd", LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}
}

// Identity is a replica's name in the Lease: the pod's hostname and a random suffix, so
// a restarted process is never mistaken for the one before it.
func Identity() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "deployd"
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "_" + hex.EncodeToString(b)
}

// Run takes part in the election until ctx ends or leadership is lost. lead runs when
// this replica becomes the leader, with a context that ends when it stops leading; Run
// returns then: a replica that lost the lease must not act on what it believed, so the
// caller stops (and is restarted as a follower). When ctx ends first, the lease is
// released, so a follower takes over at once rather than after LeaseDuration.
func Run(ctx context.Context, cfg *rest.Config, opts Options, log *slog.Logger, lead func(ctx context.Context)) error {
	if opts.Identity == "" {
		opts.Identity = Identity()
	}
	if opts.RenewDeadline >= opts.LeaseDuration {
		return fmt.Errorf("the leader election's renew deadline (%s) must be shorter than its lease duration (%s)", opts.RenewDeadline, opts.LeaseDuration)
	}
	kube, err := kubernetes.NewForConfig(rest.CopyConfig(cfg))
	if err != nil {
		return err
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: opts.Namespace, Name: opts.Name},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: opts.Identity},
	}
	var led atomic.Bool
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   opts.LeaseDuration,
		RenewDeadline:   opts.RenewDeadline,
		RetryPeriod:     opts.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            opts.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				led.Store(true)
				log.Info("this replica is the leader: it fetches and applies", "identity", opts.Identity, "lease", opts.Namespace+"/"+opts.Name)
				lead(ctx)
			},
			OnStoppedLeading: func() {},
			OnNewLeader: func(id string) {
				if id != opts.Identity {
					log.Info("following the leader: serving reads and handing requests over", "leader", id, "identity", opts.Identity)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("setting up leader election: %w", err)
	}
	log.Info("leader election on", "identity", opts.Identity, "lease", opts.Namespace+"/"+opts.Name, "leaseDuration", opts.LeaseDuration.String())
	elector.Run(ctx)
	if ctx.Err() == nil && led.Load() {
		return fmt.Errorf("lost the leader lease %s/%s", opts.Namespace, opts.Name)
	}
	return nil
}
