package simcluster

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
)

var env *Env

func TestMain(m *testing.M) { os.Exit(Main(m, &env)) }

func deployment(name string, replicas int32, podLabels map[string]string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	for k, v := range podLabels {
		labels[k] = v
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas:                ptr.To(replicas),
			ProgressDeadlineSeconds: ptr.To[int32](5),
			Selector:                &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}}},
			},
		},
	}
}

// waitDeployment polls the Deployment until done says so.
func waitDeployment(t *testing.T, ns, name string, timeout time.Duration, done func(*appsv1.Deployment) bool) *appsv1.Deployment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last *appsv1.Deployment
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		d, err := env.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = d
		return done(d), nil
	})
	if err != nil {
		t.Fatalf("Deployment %s/%s: %v; last status: %+v", ns, name, err, last.Status)
	}
	return last
}

func TestDeploymentRollsOut(t *testing.T) {
	ns := env.Namespace(t)
	ctx := context.Background()
	if _, err := env.Client.AppsV1().Deployments(ns).Create(ctx, deployment("web", 3, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := waitDeployment(t, ns, "web", 2*time.Minute, func(d *appsv1.Deployment) bool {
		s := d.Status
		return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == 3 && s.AvailableReplicas == 3 && s.ReadyReplicas == 3
	})
	pods, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 3 {
		t.Fatalf("%d pods, want 3", len(pods.Items))
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName != NodeName || p.Status.Phase != corev1.PodRunning {
			t.Errorf("pod %s on node %q in phase %s, want Running on %s", p.Name, p.Spec.NodeName, p.Status.Phase, NodeName)
		}
	}
	t.Logf("rolled out: %d/%d available", d.Status.AvailableReplicas, *d.Spec.Replicas)
}

func TestCrashLoopingPodsFailTheRollout(t *testing.T) {
	ns := env.Namespace(t)
	d := deployment("broken", 2, map[string]string{CrashLoopLabel: "true"})
	if _, err := env.Client.AppsV1().Deployments(ns).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitDeployment(t, ns, "broken", 2*time.Minute, func(d *appsv1.Deployment) bool {
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse {
				return c.Reason == "ProgressDeadlineExceeded"
			}
		}
		return false
	})
	if got.Status.AvailableReplicas != 0 {
		t.Errorf("%d replicas available, want 0: kwok should have kept every pod unready", got.Status.AvailableReplicas)
	}
}

func TestFailedPodsAreReplaced(t *testing.T) {
	ns := env.Namespace(t)
	ctx := context.Background()
	d := deployment("failing", 1, map[string]string{FailLabel: "true"})
	if _, err := env.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err := wait.PollUntilContextCancel(wctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		pods, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=failing"})
		if err != nil {
			return false, nil
		}
		failed := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodFailed {
				failed++
			}
		}
		return failed >= 2, nil
	})
	if err != nil {
		t.Fatalf("want at least two Failed pods (one replaced by the ReplicaSet, then failed again): %v", err)
	}
}

// ownCluster starts a cluster for one test, for tests that stop or kill its parts (the
// package's is shared), and stops it after.
func ownCluster(t *testing.T) *Cluster {
	t.Helper()
	c, err := Start(context.Background(), DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping the cluster: %v", err)
		}
	})
	return c
}

// TestAPIServerOutage stops the API server of a cluster of its own (the package's is
// shared), sees requests refused, starts it again and sees the same data through the
// same credentials.
func TestAPIServerOutage(t *testing.T) {
	ctx := context.Background()
	c := ownCluster(t)
	client := newEnv(c.Config, c.Kubeconfig).Client
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kept", Namespace: "default"}, Data: map[string]string{"a": "b"}}
	if _, err := client.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := c.PIDs()

	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().ConfigMaps("default").Get(ctx, "kept", metav1.GetOptions{}); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("a read during the outage: %v, want connection refused", err)
	}
	if err := c.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := client.CoreV1().ConfigMaps("default").Get(ctx, "kept", metav1.GetOptions{})
	if err != nil || got.Data["a"] != "b" {
		t.Fatalf("after the restart, with the same client: %v, %v", got, err)
	}
	after := c.PIDs()
	if len(after) != len(before) || after[1] == before[1] {
		t.Errorf("components %v before, %v after: want the API server replaced in its place", before, after)
	}
	for i := range before {
		if i != 1 && after[i] != before[i] {
			t.Errorf("component %d changed (pid %d, then %d): only the API server should restart", i, before[i], after[i])
		}
	}
	if _, err := os.Stat(c.path(fmt.Sprintf("kube-apiserver.%d.log", before[1]))); err != nil {
		t.Errorf("the stopped API server's log was not kept: %v", err)
	}
}

// TestKwokStartsAgainWhenItDies kills kwok in a cluster of its own, as kwok's own race
// at start does: a new kwok takes its place, its log is kept, and pods go Ready again.
func TestKwokStartsAgainWhenItDies(t *testing.T) {
	ctx := context.Background()
	c := ownCluster(t)
	dead := c.proc("kwok")
	if err := dead.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := wait.PollUntilContextCancel(wctx, 50*time.Millisecond, true, func(context.Context) (bool, error) {
		return c.proc("kwok") != dead, nil
	}); err != nil {
		t.Fatalf("no new kwok after the first was killed: %v", err)
	}
	if _, err := os.Stat(c.path(fmt.Sprintf("kwok.%d.log", dead.cmd.Process.Pid))); err != nil {
		t.Errorf("the dead kwok's log was not kept: %v", err)
	}
	e := newEnv(c.Config, c.Kubeconfig)
	if _, err := e.Client.AppsV1().Deployments("default").Create(ctx, deployment("after", 1, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := e.Client.AppsV1().Deployments("default").Get(ctx, "after", metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas == 1, nil
	})
	if err != nil {
		t.Fatalf("no pod went Ready after kwok started again: %v", err)
	}
}
