package rollout

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/panics"
)

// TestStatusPanicInAWatchHandler: an object whose status computation panics, seen by a
// real watch's event handler, is Unknown and told to Panicked with the stack; the
// process goes on and other objects keep their real status.
func TestStatusPanicInAWatchHandler(t *testing.T) {
	tr, err := NewTracker(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var told []string
	var stack string
	tr.Panicked = func(object string, err error) {
		mu.Lock()
		defer mu.Unlock()
		told = append(told, object)
		var p *panics.Error
		if errors.As(err, &p) {
			stack = string(p.Stack)
		}
	}
	var nilMap map[string]int
	tr.compute = func(u *unstructured.Unstructured) ObjectStatus {
		if u.GetName() == "boom" {
			nilMap["x"] = 1 // what a bug in a status rule would do
		}
		return Compute(u)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	tr.Start(ctx)

	ns := env.Namespace(t)
	targets := applyNow(t, ns, map[string]string{"cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: boom}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine}\n"})
	refs := make([]apply.Ref, len(targets))
	for i, tg := range targets {
		refs[i] = tg.Ref
	}
	if err := tr.Watch(ctx, refs); err != nil {
		t.Fatal(err)
	}
	got := map[string]Tracked{}
	for deadline := time.Now().Add(30 * time.Second); ; {
		for _, r := range refs {
			got[r.Name] = tr.Get(r)
		}
		if got["boom"].Found && got["fine"].Found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("statuses %+v, want both objects found", got)
		}
		select {
		case <-tr.Changed():
		case <-time.After(time.Second):
		}
	}
	if s := got["boom"]; s.Status != Unknown || !strings.Contains(s.Message, "computing its status: deployd panicked: assignment to entry in nil map") {
		t.Errorf("boom: %s %q, want Unknown saying the computation panicked", s.Status, s.Message)
	}
	if s := got["fine"]; s.Status != Current {
		t.Errorf("fine: %s %q, want Current", s.Status, s.Message)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(told) == 0 || told[0] != "ConfigMap/"+ns+"/boom" || !strings.Contains(stack, "panic_test.go") {
		t.Errorf("Panicked told %v, stack:\n%s", told, stack)
	}
}
