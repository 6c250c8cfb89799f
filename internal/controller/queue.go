package controller

import (
	"context"
	"errors"

	"github.com/deployd/deployd/internal/config"
)

// ErrNotConfigured is what a queue answers for a repo the config does not have.
var ErrNotConfigured = errors.New("no such repo and environment in the config")

// LocalQueue queues requests on a controller in this process: the queue of a replica
// that deploys itself. The webhook and the API take it (they also take a follower's,
// which hands requests to the leader and can fail).
type LocalQueue struct{ c *Controller }

// Local returns c's queue.
func Local(c *Controller) LocalQueue { return LocalQueue{c} }

// Enqueue queues req; it fails only with ErrNotConfigured.
func (q LocalQueue) Enqueue(_ context.Context, key config.Key, req Request) error {
	if !q.c.Enqueue(key, req) {
		return ErrNotConfigured
	}
	return nil
}

// Config is the config in force.
func (q LocalQueue) Config() *config.Config { return q.c.Config() }
