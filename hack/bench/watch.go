package main

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// watchUntil opens a watch now and returns a function that waits until done holds for
// an event, returning when that event arrived. Opening before the trigger means no
// change is missed; the time is the harness' own clock at arrival.
func watchUntil(ctx context.Context, open func(context.Context) (watch.Interface, error), done func(watch.Event) bool) (func(time.Duration) (time.Time, error), error) {
	wctx, cancel := context.WithCancel(ctx)
	w, err := open(wctx)
	if err != nil {
		cancel()
		return nil, err
	}
	return func(timeout time.Duration) (time.Time, error) {
		defer cancel()
		defer w.Stop()
		deadline := time.NewTimer(timeout)
		defer deadline.Stop()
		for {
			select {
			case ev, ok := <-w.ResultChan():
				at := time.Now()
				if !ok {
					return time.Time{}, fmt.Errorf("watch closed")
				}
				if done(ev) {
					return at, nil
				}
			case <-deadline.C:
				return time.Time{}, fmt.Errorf("not seen within %s", timeout)
			}
		}
	}, nil
}

// watchValue waits for ConfigMap "settings" in ns to hold value.
func (e *env) watchValue(ctx context.Context, ns, value string) (func(time.Duration) (time.Time, error), error) {
	return watchUntil(ctx, func(ctx context.Context) (watch.Interface, error) {
		return e.kube.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=settings"})
	}, func(ev watch.Event) bool {
		cm, ok := ev.Object.(*corev1.ConfigMap)
		return ok && ev.Type != watch.Deleted && cm.Data["value"] == value
	})
}

// watchPodsReady waits until n pods of run (the pod template's bench/run annotation) in
// ns are Ready: the moment the last pod of the rollout turns Ready.
func (e *env) watchPodsReady(ctx context.Context, ns, run string, n int) (func(time.Duration) (time.Time, error), error) {
	ready := map[string]bool{}
	return watchUntil(ctx, func(ctx context.Context) (watch.Interface, error) {
		return e.kube.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	}, func(ev watch.Event) bool {
		p, ok := ev.Object.(*corev1.Pod)
		if !ok || p.Annotations["bench/run"] != run {
			return false
		}
		ready[p.Name] = ev.Type != watch.Deleted && p.DeletionTimestamp == nil && podReady(p)
		count := 0
		for _, r := range ready {
			if r {
				count++
			}
		}
		return count >= n
	})
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// watchComplete waits until Deployment web in ns has rolled out run, as its status
// (the controller-manager's view) says.
func (e *env) watchComplete(ctx context.Context, ns, run string) (func(time.Duration) (time.Time, error), error) {
	return watchUntil(ctx, func(ctx context.Context) (watch.Interface, error) {
		return e.kube.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=web"})
	}, func(ev watch.Event) bool {
		d, ok := ev.Object.(*appsv1.Deployment)
		if !ok || d.Spec.Template.Annotations["bench/run"] != run || d.Spec.Replicas == nil {
			return false
		}
		want, s := *d.Spec.Replicas, d.Status
		return s.ObservedGeneration >= d.Generation && s.Replicas == want && s.UpdatedReplicas == want &&
			s.ReadyReplicas == want && s.AvailableReplicas == want
	})
}
