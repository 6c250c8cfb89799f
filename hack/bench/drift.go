package main

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deployd/deployd/pkg/client"
)

// driftCorrected is scenario 10: a hand edit of an object deployd applied (another field
// manager changes the ConfigMap's value, as kubectl edit does) until the value deployd
// applied is back, seen by a watch. Each run edits a repo of its own, so no repo is edited
// again soon after its correction (which deployd would treat as writers fighting and back
// off from). Flux corrects on its interval instead (1 to 10 minutes in common setups).
func (e *env) driftCorrected(ctx context.Context, r *results) error {
	tmpl := e.git.NewRepo(e.tb, "bench/drift-template")
	tmpl.Commit("main", "first", app(appOptions{value: "applied", configOnly: true}))
	entries, err := e.copyRepos(tmpl, "bench/drift", e.opts.runs+1) // the first warms up
	if err != nil {
		return err
	}
	d, err := e.startDeployd("drift", entries)
	if err != nil {
		return err
	}
	defer d.stop()
	if _, err := waitReady(ctx, d); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	_, err = d.waitFor(wctx, 100*time.Millisecond, func(s map[string]client.Summary) bool {
		for _, en := range entries {
			if s[en.Name].Phase != "succeeded" {
				return false
			}
		}
		return true
	})
	cancel()
	if err != nil {
		return fmt.Errorf("first deployment of the drift repos (log: %s): %w", d.log, err)
	}
	var took []time.Duration
	for i, en := range entries {
		cms := e.kube.CoreV1().ConfigMaps(en.Namespace)
		cm, err := cms.Get(ctx, "settings", metav1.GetOptions{})
		if err != nil {
			return err
		}
		cm.Data["value"] = "edited by hand"
		start := time.Now()
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
			return fmt.Errorf("editing %s's ConfigMap: %w", en.Name, err)
		}
		seen, err := e.watchValue(ctx, en.Namespace, "applied")
		if err != nil {
			return err
		}
		at, err := seen(30 * time.Second)
		if err != nil {
			return fmt.Errorf("run %d: the hand edit of %s was not corrected (log: %s): %w", i, en.Name, d.log, err)
		}
		if i > 0 {
			took = append(took, at.Sub(start))
		}
		progress("hand edit → corrected %d/%d: %s", i, len(entries)-1, ms(at.Sub(start)))
	}
	p99 := percentile(took, 99)
	r.add(10, "hand edit → corrected (value back, seen by a watch)", series(took), "≤ 1 s", median(took) <= time.Second)
	r.add(10, "hand edit → corrected, p99", single(p99), "", nil)
	return nil
}
