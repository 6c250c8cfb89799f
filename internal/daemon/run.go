package daemon

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
)

// Run starts the built parts: the status watches and GitHub reporting, the state of the
// repos (preloaded before serving, so a restart shows its history at once), the
// election and the controller, the config watcher and the HTTP server. It blocks until
// ctx ends (nil) or a part fails (its error); Close then stops the parts.
func (d *Daemon) Run(ctx context.Context) error {
	if err := d.start(ctx); err != nil {
		d.urgent = true
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- d.srv.Serve(d.api.Listener(d.ln, d.srv)) }()
	if d.debugLn != nil {
		d.log.Info("serving pprof", "listen", d.debugLn.Addr().String())
		go func() { _ = debugServer().Serve(d.debugLn) }()
	}
	if d.opts.Listening != nil {
		d.opts.Listening(d.ln.Addr())
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-serveErr:
		d.urgent = true
		return fmt.Errorf("serving HTTP: %w", err)
	case err := <-d.lost:
		// A replica that lost the lease stops at once: another may be deploying already.
		d.log.Error("stopping: this replica is no longer the leader; a restart rejoins as a follower", "err", err)
		d.urgent = true
		return err
	}
}

// start starts everything but the HTTP server, in the startup order.
func (d *Daemon) start(ctx context.Context) error {
	cfg := d.watcher.State().Config
	d.parts.tracker.Start(d.work)
	d.parts.startReporting(d.work)
	d.wg.Go(func() { d.parts.publishDrift(d.work, func() *config.Config { return d.watcher.State().Config }, d.log) })
	if d.opts.LeaderElect {
		if err := d.router.WatchStates(d.work, apply.LabelManagedBy+"="+apply.ManagedByValue); err != nil {
			return err
		}
		d.router.Follow(ctx, cfg)
	} else {
		d.redo = d.router.Lead(ctx, cfg, time.Time{}) // before serving: a restart shows its history at once
	}
	d.ctl.SetConfig(cfg)
	d.wg.Go(func() { d.health.probeLoop(d.work, d.prober, d.opts.ProbeInterval, d.log) })
	d.wg.Go(func() { d.previews.Run(d.work) })
	d.lost, d.stopElection = elect(d.work, &d.wg, d.restCfg, d.opts, d.log, d.lead)
	d.wg.Go(d.watchConfig)
	if d.configMap != nil {
		d.wg.Go(func() {
			if err := watchConfigMap(d.work, d.parts.kube, *d.configMap, d.watcher); err != nil {
				d.log.Error("config ConfigMap watch stopped: its edits act when the file changes", "err", err)
			}
		})
	}
	return nil
}

// lead runs the work queue, at once or once elected, until ctx ends.
func (d *Daemon) lead(ctx context.Context, since time.Time) {
	if d.opts.LeaderElect {
		d.redo = d.router.Lead(ctx, d.watcher.State().Config, since)
	}
	d.parts.pokeDrift() // a former leader's stored drift is replaced by this one's
	for _, k := range d.redo {
		d.ctl.Enqueue(k, controller.Request{Trigger: controller.TriggerStartup, Force: true})
	}
	go releaseAfterStartup(ctx, d.ctl.Idle)
	d.ctl.Run(ctx)
}

// watchConfig applies each reload of repos.yaml until the background work ends.
func (d *Daemon) watchConfig() {
	onReload := func(r config.Reload) {
		logReload(d.log, r)
		if r.Err == nil {
			pruneCaches(d.src, r.Config, d.log)
			pruneCaches(d.previewSrc, r.Config, d.log)
			d.view.SetConfig(r.Config)
			d.router.SetConfig(r.Config)
			d.ctl.SetConfig(r.Config)
		}
	}
	if err := d.watcher.Run(d.work, onReload); err != nil {
		d.log.Error("config watcher stopped: reloads are off until restart", "err", err)
	}
}

// Close stops the parts in the reverse of their start: the HTTP server (gracefully,
// within ShutdownTimeout, unless Run ended on a failure), the background work (waits
// end unrecorded, and the next leader marks them interrupted and redoes them), then the
// election, whose lease is released once the work stopped so a follower takes over at
// once.
func (d *Daemon) Close() {
	graceful := d.srv != nil && !d.urgent
	if graceful {
		d.shutdown()
	} else {
		if d.srv != nil {
			_ = d.srv.Close()
		}
		d.stopNow()
	}
	d.stopElection()
	for _, ln := range []net.Listener{d.ln, d.debugLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	if graceful {
		d.log.Info("stopped")
	}
}

// shutdown ends the HTTP requests, then the background work, within ShutdownTimeout.
func (d *Daemon) shutdown() {
	d.health.stopping.Store(true) // not ready: in-flight requests finish, new ones go elsewhere
	d.log.Info("shutting down", "timeout", d.opts.ShutdownTimeout.String())
	ctx, cancel := context.WithTimeout(context.WithoutCancel(d.work), d.opts.ShutdownTimeout)
	defer cancel()
	if err := d.srv.Shutdown(ctx); err != nil {
		d.log.Warn("HTTP requests still running at the shutdown deadline were cut off", "err", err)
		_ = d.srv.Close()
	}
	done := make(chan struct{})
	go func() {
		d.stopNow()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		d.log.Warn("background work did not stop before the shutdown deadline")
	}
}

// stopNow ends the background work at once and waits for it.
func (d *Daemon) stopNow() {
	d.stopWork()
	d.wg.Wait()
	if d.parts != nil {
		d.parts.runner.Close()
		d.parts.tagger.Wait() // its pushes end with the work's context
	}
}
