package leader

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/simcluster"
)

var env *simcluster.Env

func TestMain(m *testing.M) { os.Exit(simcluster.Main(m, &env)) }

// TestHandConcurrently hands requests from several followers at once, to a ConfigMap
// that does not exist yet and one the leader writes meanwhile: none is lost, the
// leader's data is kept, and the inbox gives each request once.
func TestHandConcurrently(t *testing.T) {
	ns := env.Namespace(t)
	h := NewHandoff(env.Client, ns)
	meta := metav1.ObjectMeta{Labels: map[string]string{"app.kubernetes.io/managed-by": "deployd"}}
	in := NewInbox(time.Now().Add(-time.Minute))
	ctx := context.Background()

	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			req := controller.Request{Trigger: controller.TriggerWebhook, Commit: string(rune('a' + i))}
			if err := h.Hand(ctx, "state", meta, req); err != nil {
				t.Error(err)
			}
		})
	}
	// The leader writes its data at the same time.
	wg.Go(func() {
		for range 5 {
			cm, err := env.Client.CoreV1().ConfigMaps(ns).Get(ctx, "state", metav1.GetOptions{})
			if err != nil {
				continue
			}
			if cm.Data == nil {
				cm.Data = map[string]string{}
			}
			cm.Data["history"] = "kept"
			_, _ = env.Client.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{})
		}
	})
	wg.Wait()

	cm, err := env.Client.CoreV1().ConfigMaps(ns).Get(ctx, "state", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Labels["app.kubernetes.io/managed-by"] != "deployd" {
		t.Errorf("labels %v", cm.Labels)
	}
	got := in.Take(cm)
	commits := map[string]bool{}
	for _, r := range got {
		commits[r.Commit] = true
		if r.Trigger != controller.TriggerWebhook {
			t.Errorf("request %+v", r)
		}
	}
	if len(got) != 8 || len(commits) != 8 {
		t.Errorf("took %d requests (%d distinct), want 8: %s", len(got), len(commits), cm.Annotations[AnnotationRequests])
	}
	if again := in.Take(cm); len(again) != 0 {
		t.Errorf("taken twice: %+v", again)
	}
	if err := h.Hand(ctx, "state", meta, controller.Request{Trigger: controller.TriggerAPI, Force: true}); err != nil {
		t.Fatal(err)
	}
	cm, _ = env.Client.CoreV1().ConfigMaps(ns).Get(ctx, "state", metav1.GetOptions{})
	if got := in.Take(cm); len(got) != 1 || got[0].Trigger != controller.TriggerAPI || !got[0].Force {
		t.Errorf("the next request: %+v", got)
	}
}

func TestInboxSkipsOldAndDamaged(t *testing.T) {
	now := time.Now()
	cm := func(list string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationRequests: list}}}
	}
	in := NewInbox(now.Add(-20 * time.Second))
	old := `{"id":"1","at":"` + now.Add(-time.Minute).UTC().Format(time.RFC3339Nano) + `","request":{"Trigger":"webhook"}}`
	recent := `{"id":"2","at":"` + now.Add(-5*time.Second).UTC().Format(time.RFC3339Nano) + `","request":{"Trigger":"api","Force":true}}`
	got := in.Take(cm("[" + old + "," + recent + "]"))
	if len(got) != 1 || got[0].Trigger != controller.TriggerAPI {
		t.Errorf("took %+v, want only the request handed over since the inbox's start", got)
	}
	if got := in.Take(cm("not json")); got != nil {
		t.Errorf("a damaged annotation gave %+v", got)
	}
	list := make([]Handed, 30)
	for i := range list {
		list[i] = Handed{ID: string(rune('a' + i)), At: now.Add(time.Duration(i) * time.Second)}
	}
	list = append([]Handed{{ID: "stale", At: now.Add(-time.Hour)}}, list...)
	want := list[len(list)-keepRequests].ID
	kept := trim(list, now.Add(30*time.Second))
	if len(kept) != keepRequests || kept[0].ID != want {
		t.Errorf("trim kept %d from %s", len(kept), kept[0].ID)
	}
}

// TestElection runs two electors on one Lease: one leads; when it stops (its context
// ends, releasing the lease) the other takes over at once, without waiting out the lease.
func TestElection(t *testing.T) {
	ns := env.Namespace(t)
	opts := Options{Namespace: ns, Name: "deployd", LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 500 * time.Millisecond}
	log := slog.New(slog.DiscardHandler)
	leading := make(chan string, 2)
	run := func(ctx context.Context, id string) chan error {
		o := opts
		o.Identity = id
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, env.Config, o, log, func(ctx context.Context) { leading <- id; <-ctx.Done() })
		}()
		return done
	}
	ctxA, stopA := context.WithCancel(context.Background())
	doneA := run(ctxA, "a")
	if got := <-leading; got != "a" {
		t.Fatalf("leader %q", got)
	}
	ctxB, stopB := context.WithCancel(context.Background())
	defer stopB()
	doneB := run(ctxB, "b")
	select {
	case got := <-leading:
		t.Fatalf("%q leads while a holds the lease", got)
	case <-time.After(2 * time.Second):
	}
	start := time.Now()
	stopA()
	if err := <-doneA; err != nil {
		t.Errorf("a stopped with %v, want nil (its context ended)", err)
	}
	select {
	case got := <-leading:
		if got != "b" || time.Since(start) > 5*time.Second {
			t.Errorf("%q took over after %s", got, time.Since(start))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b did not take over the released lease")
	}
	stopB()
	if err := <-doneB; err != nil {
		t.Errorf("b stopped with %v", err)
	}
	bad := Options{Namespace: ns, Name: "x", LeaseDuration: time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: time.Second}
	if err := Run(context.Background(), env.Config, bad, log, nil); err == nil {
		t.Error("a renew deadline longer than the lease was taken")
	}
}
