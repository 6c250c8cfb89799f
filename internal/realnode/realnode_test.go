package realnode

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// TestRealNode starts a real node beside the simulated one, runs real Pods on it, stops
// it, and checks the machine is as it was before.
func TestRealNode(t *testing.T) {
	Need(t)
	ctx := t.Context()
	binDir, err := Binaries(ctx, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	opts.BinDir, opts.Progress = binDir, os.Stderr
	start := time.Now()
	n := StartForTest(t, opts)
	t.Logf("cluster and node Ready in %s", time.Since(start).Round(10*time.Millisecond))
	pids := append(n.PIDs(), n.Cluster.PIDs()...)
	cs := kubernetes.NewForConfigOrDie(n.Cluster.Config)

	img, err := SampleApp(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.LoadImage(ctx, img, SampleAppImage); err != nil {
		t.Fatal(err)
	}

	t.Run("a Deployment rolls out on the real node and its Service answers through kube-proxy", func(t *testing.T) {
		ns := "web"
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		created := time.Now()
		if _, err := cs.AppsV1().Deployments(ns).Create(ctx, sampleDeployment("web", "hello from a real Pod", false), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		svc, err := cs.CoreV1().Services(ns).Create(ctx, sampleService("web"), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		waitAvailable(t, cs, ns, "web", 2)
		t.Logf("Deployment of 2 replicas Available %s after creation", time.Since(created).Round(10*time.Millisecond))
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			if p.Spec.NodeName != NodeName {
				t.Errorf("pod %s runs on %s, want the real node %s", p.Name, p.Spec.NodeName, NodeName)
			}
		}
		if err := n.WaitService(ctx, ns, "web"); err != nil {
			t.Fatal(err)
		}
		for _, url := range []string{
			"http://" + net.JoinHostPort(svc.Spec.ClusterIP, "80") + "/",
			"http://" + net.JoinHostPort(Address, strconv.Itoa(int(svc.Spec.Ports[0].NodePort))) + "/",
		} {
			if got := getEventually(t, url); got != "hello from a real Pod\n" {
				t.Errorf("GET %s = %q, want the Pods' MESSAGE", url, got)
			}
		}
	})

	t.Run("a container that never turns ready keeps its Pod unready", func(t *testing.T) {
		ns := "unready"
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		d := sampleDeployment("never", "never ready", true)
		d.Spec.Replicas = ptr(int32(1))
		if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// Running, probed and failing: the readiness probe (every second) has failed at
		// least three times, and the Pod is still not Ready.
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=never"})
			if err != nil || len(pods.Items) != 1 {
				return false, nil
			}
			p := pods.Items[0]
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					return false, fmt.Errorf("pod %s turned Ready", p.Name)
				}
			}
			for _, s := range p.Status.ContainerStatuses {
				if s.State.Running != nil && time.Since(s.State.Running.StartedAt.Time) > 3*time.Second {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("teardown leaves the machine as it found it", func(t *testing.T) {
		// What Observe sees while the node runs, so that equality after Stop means something.
		during := Observe(binDir)
		for what, found := range map[string]bool{
			"the node address on lo":            slices.Contains(during.Addresses, "lo "+Address+"/32"),
			"kube-proxy's KUBE-SERVICES":        slices.ContainsFunc(during.Rules, func(r string) bool { return strings.Contains(r, ":KUBE-SERVICES") }),
			"the bridge plugin's CNI-*":         slices.ContainsFunc(during.Rules, func(r string) bool { return strings.Contains(r, ":CNI-") }),
			"the kubelet's volume mounts":       slices.ContainsFunc(during.Mounts, func(m string) bool { return strings.HasPrefix(m, n.Dir+"/kubelet/pods/") }),
			"containers in the node's cgroup":   len(during.Processes) > 0,
			"ip_forward on (the bridge plugin)": during.Sysctls["net/ipv4/ip_forward"] == "1",
		} {
			if !found {
				t.Errorf("while the node runs, Observe does not see %s", what)
			}
		}
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
		for _, pid := range pids {
			if alive(pid) {
				t.Errorf("process %s still runs after Stop", describe(pid))
			}
		}
		if diff := cmp.Diff(n.MachineBefore(), n.MachineAfter()); diff != "" {
			t.Errorf("machine state after Stop differs from before Start (-before +after):\n%s", diff)
		}
		if _, err := os.Stat(n.Dir); !os.IsNotExist(err) {
			t.Errorf("node directory %s still there after Stop (%v)", n.Dir, err)
		}
	})
}

func ptr[T any](v T) *T { return &v }

// sampleDeployment runs 2 replicas of the sample app, with a readiness probe on /ready.
func sampleDeployment(name, message string, neverReady bool) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	args := []string{}
	if neverReady {
		args = append(args, "--never-ready")
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector:                  map[string]string{NodeLabel: "real"},
					TerminationGracePeriodSeconds: ptr(int64(1)),
					Containers: []corev1.Container{{
						Name:            "app",
						Image:           "sampleapp:dev",
						ImagePullPolicy: corev1.PullIfNotPresent,
						Args:            args,
						Env:             []corev1.EnvVar{{Name: "MESSAGE", Value: message}},
						Ports:           []corev1.ContainerPort{{ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8080)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
}

func sampleService(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeNodePort,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
}

func waitAvailable(t *testing.T, cs kubernetes.Interface, ns, name string, replicas int32) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && d.Status.ObservedGeneration == d.Generation && d.Status.AvailableReplicas == replicas && d.Status.UpdatedReplicas == replicas, nil
	})
	if err != nil {
		pods, _ := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
		var states []string
		for _, p := range pods.Items {
			states = append(states, fmt.Sprintf("%s on %q: %s %v", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.ContainerStatuses))
		}
		t.Fatalf("Deployment %s/%s not Available with %d replicas: %v\n%s", ns, name, replicas, err, strings.Join(states, "\n"))
	}
}

// getEventually GETs url until it answers 200 (a new Service answers about a second
// after its endpoints are ready), and returns the body.
func getEventually(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var body string
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		resp, err := client.Get(url)
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err == nil && resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		t.Fatalf("GET %s: %v (last body %q)", url, err, body)
	}
	return body
}
