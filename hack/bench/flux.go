package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"

	"github.com/deployd/deployd/internal/simcluster"
)

// The Flux releases the bench runs as deployd's peer; hack/flux/build.sh pins the same.
const (
	fluxSourceVersion    = "v1.9.0"
	fluxKustomizeVersion = "v1.9.6"
	// fluxNamespace holds Flux's objects (RUNTIME_NAMESPACE of both controllers).
	fluxNamespace = "flux-system"
	// fluxDefaultConcurrent is kustomize-controller's default --concurrent (source-controller's is 2).
	fluxDefaultConcurrent = 4
	// fluxHealthPoll is how often kustomize-controller polls health with wait: true: the
	// Interval of its WaitForSet call, not a flag.
	fluxHealthPoll = 5 * time.Second
)

var (
	gitRepositories = schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "gitrepositories"}
	kustomizations  = schema.GroupVersionResource{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Resource: "kustomizations"}
)

// fluxPeer is Flux's source-controller and kustomize-controller, built from their released
// modules (hack/flux/build.sh), running as processes against the bench's cluster.
type fluxPeer struct {
	e   *env
	bin string
	dyn dynamic.Interface
	// concurrent is both controllers' --concurrent while they run; 0 means their defaults.
	concurrent int
	source     *simcluster.Process
	kustomize  *simcluster.Process
	dir        string
	starts     int
	// storage is source-controller's artifact address, the same across restarts: a
	// restarted controller must serve the artifacts at the URL the GitRepositories'
	// status already names, as its Service does in a cluster. A new address at each
	// start left kustomize-controller fetching from a dead port until every
	// GitRepository was reconciled again, which measured Flux failing, not idle.
	storage string
}

// fluxBinaries builds (once, cached) or finds the controllers and returns their directory.
func fluxBinaries(ctx context.Context) (string, error) {
	script := filepath.Join("hack", "flux", "build.sh")
	if _, err := os.Stat(script); err != nil {
		return "", fmt.Errorf("%s: %w (run the bench from the repository's root, as make bench does)", script, err)
	}
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Stderr = os.Stderr // its progress lines
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", script, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// newFluxPeer builds Flux if needed and installs its CRDs and namespace in the cluster; the
// controllers start with start.
func (e *env) newFluxPeer(ctx context.Context) (*fluxPeer, error) {
	bin, err := fluxBinaries(ctx)
	if err != nil {
		return nil, err
	}
	cfg := *e.cluster.Config
	dyn, err := dynamic.NewForConfig(&cfg)
	if err != nil {
		return nil, err
	}
	f := &fluxPeer{e: e, bin: bin, dyn: dyn, dir: filepath.Join(e.dir, "flux")}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return nil, err
	}
	if err := e.ensureNamespace(ctx, fluxNamespace); err != nil {
		return nil, err
	}
	if err := run(ctx, e.dir, e.kubectl, "--kubeconfig", e.cluster.Kubeconfig, "apply", "--server-side", "--field-manager", "bench-flux",
		"-f", filepath.Join(bin, "crd", "source-controller"), "-f", filepath.Join(bin, "crd", "kustomize-controller")); err != nil {
		return nil, fmt.Errorf("applying Flux's CRDs: %w", err)
	}
	if err := run(ctx, e.dir, e.kubectl, "--kubeconfig", e.cluster.Kubeconfig, "wait", "--for", "condition=Established", "--timeout", "60s",
		"crd/gitrepositories.source.toolkit.fluxcd.io", "crd/kustomizations.kustomize.toolkit.fluxcd.io"); err != nil {
		return nil, fmt.Errorf("waiting for Flux's CRDs: %w", err)
	}
	return f, nil
}

// start runs both controllers with --concurrent n (0: their defaults) and waits until both
// answer their readiness probes.
func (f *fluxPeer) start(ctx context.Context, n int) error {
	f.concurrent = n
	f.starts++
	if f.storage == "" {
		f.storage = freeAddr()
	}
	storage := f.storage
	common := func(name string) []string {
		a := []string{
			"KUBECONFIG=" + f.e.cluster.Kubeconfig, "RUNTIME_NAMESPACE=" + fluxNamespace,
			filepath.Join(f.bin, name),
			"--enable-leader-election=false", "--metrics-addr=" + freeAddr(), "--log-level=info", "--log-encoding=json",
		}
		if n > 0 {
			a = append(a, fmt.Sprintf("--concurrent=%d", n))
		}
		return a
	}
	srcHealth, kusHealth := freeAddr(), freeAddr()
	// One storage directory for every start: artifacts are named by their
	// GitRepository, and each part's apps have their own names.
	storagePath := filepath.Join(f.dir, "storage")
	if err := os.MkdirAll(storagePath, 0o755); err != nil {
		return err
	}
	var err error
	// /usr/bin/env sets the controllers' environment and execs them: the pid is theirs.
	f.source, err = simcluster.StartProcess(f.dir, filepath.Join(f.dir, fmt.Sprintf("source-controller-%d.log", f.starts)), "source-controller", "/usr/bin/env",
		append(common("source-controller"), "--health-addr="+srcHealth,
			"--storage-path="+storagePath, "--storage-addr="+storage, "--storage-adv-addr="+storage)...)
	if err != nil {
		return err
	}
	f.kustomize, err = simcluster.StartProcess(f.dir, filepath.Join(f.dir, fmt.Sprintf("kustomize-controller-%d.log", f.starts)), "kustomize-controller", "/usr/bin/env",
		append(common("kustomize-controller"), "--health-addr="+kusHealth)...)
	if err != nil {
		f.stop()
		return err
	}
	for _, c := range []struct {
		p    *simcluster.Process
		addr string
	}{{f.source, srcHealth}, {f.kustomize, kusHealth}} {
		if err := waitHealthy(ctx, c.p, "http://"+c.addr+"/readyz"); err != nil {
			f.stop()
			return err
		}
	}
	return nil
}

// stop ends both controllers (SIGTERM, then SIGKILL after 20 s).
func (f *fluxPeer) stop() {
	for _, p := range []*simcluster.Process{f.source, f.kustomize} {
		if p != nil {
			_ = p.Stop(20 * time.Second)
		}
	}
	f.source, f.kustomize = nil, nil
}

// alive says which controller has exited, if one has.
func (f *fluxPeer) alive() error {
	for _, p := range []*simcluster.Process{f.source, f.kustomize} {
		if p == nil {
			return errors.New("the Flux controllers are not running")
		}
		if err := p.Exited(); err != nil {
			return err
		}
	}
	return nil
}

func waitHealthy(ctx context.Context, p *simcluster.Process, url string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if err := p.Exited(); err != nil {
			return err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling the process under test, with a deadline
		}
	}
	return fmt.Errorf("%s not ready within 2 minutes", url)
}

// ensureNamespace creates ns unless it exists.
func (e *env) ensureNamespace(ctx context.Context, ns string) error {
	_, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// fluxApp is one app as Flux is told of it: a GitRepository and a Kustomization of the same
// name in flux-system, applying the repo's deploy/manifests into namespace, with wait and
// prune on, polling every interval, as a Flux user configures an app.
type fluxApp struct {
	name, url, namespace string
	interval             time.Duration
}

// create makes the app's namespace, GitRepository and Kustomization.
func (f *fluxPeer) create(ctx context.Context, a fluxApp) error {
	if err := f.e.ensureNamespace(ctx, a.namespace); err != nil {
		return err
	}
	interval := a.interval.String()
	repo := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
		"metadata": map[string]any{"name": a.name, "namespace": fluxNamespace},
		"spec": map[string]any{
			"url": a.url, "interval": interval, "timeout": "60s",
			"ref": map[string]any{"branch": "main"},
		},
	}}
	if _, err := f.dyn.Resource(gitRepositories).Namespace(fluxNamespace).Create(ctx, repo, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating GitRepository %s: %w", a.name, err)
	}
	ks := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
		"metadata": map[string]any{"name": a.name, "namespace": fluxNamespace},
		"spec": map[string]any{
			"interval": interval, "path": "./deploy/manifests", "prune": true, "wait": true, "timeout": "5m",
			"targetNamespace": a.namespace,
			"sourceRef":       map[string]any{"kind": "GitRepository", "name": a.name},
		},
	}}
	if _, err := f.dyn.Resource(kustomizations).Namespace(fluxNamespace).Create(ctx, ks, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating Kustomization %s: %w", a.name, err)
	}
	return nil
}

// createAll creates apps from 8 goroutines, as fast as the API server takes them.
func (f *fluxPeer) createAll(ctx context.Context, apps []fluxApp) error {
	errs := make([]error, len(apps))
	next := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range next {
				errs[i] = f.create(ctx, apps[i])
			}
		})
	}
	for i := range apps {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// deleteAll deletes every GitRepository and Kustomization and waits until they are gone
// (Flux's finalizers run, pruning what the Kustomizations applied), so what comes next
// does not share the controllers with them.
func (f *fluxPeer) deleteAll(ctx context.Context) error {
	for _, r := range []schema.GroupVersionResource{kustomizations, gitRepositories} {
		if err := f.dyn.Resource(r).Namespace(fluxNamespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		n := 0
		for _, r := range []schema.GroupVersionResource{kustomizations, gitRepositories} {
			l, err := f.dyn.Resource(r).Namespace(fluxNamespace).List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			n += len(l.Items)
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d Flux objects still there 3 minutes after their deletion", n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// requestReconcile does what Flux's webhook Receiver does on a push: it sets
// reconcile.fluxcd.io/requestedAt on the GitRepository.
func (f *fluxPeer) requestReconcile(ctx context.Context, name string) error {
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"reconcile.fluxcd.io/requestedAt":%q}}}`, time.Now().Format(time.RFC3339Nano))
	_, err := f.dyn.Resource(gitRepositories).Namespace(fluxNamespace).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}

// watchReady opens a watch on the Kustomizations and returns a function that waits until
// every one of names has been Ready with sha as its last applied revision: Flux's report of
// success (with wait: true, after its health checks passed). Has been, not is: each
// reconcile turns Ready Unknown while it runs, so at 1,000 apps polled every minute some
// are always in progress, though each reported success.
func (f *fluxPeer) watchReady(ctx context.Context, names []string, sha string) (func(time.Duration) (time.Time, error), error) {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	ready := map[string]bool{}
	return watchUntil(ctx, func(ctx context.Context) (watch.Interface, error) {
		return f.dyn.Resource(kustomizations).Namespace(fluxNamespace).Watch(ctx, metav1.ListOptions{})
	}, func(ev watch.Event) bool {
		u, ok := ev.Object.(*unstructured.Unstructured)
		if !ok || !want[u.GetName()] {
			return false
		}
		ready[u.GetName()] = ready[u.GetName()] || (ev.Type != watch.Deleted && kustomizationReady(u, sha))
		for n := range want {
			if !ready[n] {
				return false
			}
		}
		return true
	})
}

// kustomizationReady says whether u reports sha applied and healthy.
func kustomizationReady(u *unstructured.Unstructured, sha string) bool {
	rev, _, _ := unstructured.NestedString(u.Object, "status", "lastAppliedRevision")
	if !strings.HasSuffix(rev, sha) {
		return false
	}
	observed, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	if observed < u.GetGeneration() {
		return false
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if ok && m["type"] == "Ready" {
			return m["status"] == "True"
		}
	}
	return false
}

// notReady lists up to 5 of names whose Kustomization is not Ready at sha, with its Ready
// message: what to say when a wait times out.
func (f *fluxPeer) notReady(ctx context.Context, names []string, sha string) string {
	l, err := f.dyn.Resource(kustomizations).Namespace(fluxNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	byName := map[string]*unstructured.Unstructured{}
	for i := range l.Items {
		byName[l.Items[i].GetName()] = &l.Items[i]
	}
	var out []string
	count := 0
	for _, n := range names {
		u := byName[n]
		if u != nil && kustomizationReady(u, sha) {
			continue
		}
		count++
		if len(out) >= 5 {
			continue
		}
		msg := "missing"
		if u != nil {
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			msg = "no Ready condition"
			for _, c := range conds {
				if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
					msg = fmt.Sprintf("Ready %v: %v", m["status"], m["message"])
				}
			}
		}
		out = append(out, n+": "+msg)
	}
	alive := "both controllers running"
	if err := f.alive(); err != nil {
		alive = err.Error()
	}
	return fmt.Sprintf("%d of %d not Ready at %.12s (%s; logs in %s): %s", count, len(names), sha, alive, f.dir, strings.Join(out, "; "))
}

// usage is the two controllers' CPU seconds so far and their memory now.
func (f *fluxPeer) usage() (cpu float64, mem memStatus, err error) {
	for _, p := range []*simcluster.Process{f.source, f.kustomize} {
		if p == nil {
			return 0, memStatus{}, errors.New("the Flux controllers are not running")
		}
		c, err := cpuSeconds(p.Pid())
		if err != nil {
			return 0, memStatus{}, err
		}
		m, err := readMemStatus(p.Pid())
		if err != nil {
			return 0, memStatus{}, err
		}
		cpu += c
		mem = mem.plus(m)
	}
	return cpu, mem, nil
}

// memStatus is a process' resident memory as /proc/PID/status splits it, in MB: anonymous
// pages (heap, stacks), file-backed pages (mostly the binary's own text and data,
// reclaimable: the kernel can drop and re-read them) and shared memory.
type memStatus struct{ anon, file, shmem float64 }

func (m memStatus) rss() float64 { return m.anon + m.file + m.shmem }

func (m memStatus) plus(o memStatus) memStatus {
	return memStatus{m.anon + o.anon, m.file + o.file, m.shmem + o.shmem}
}

func readMemStatus(pid int) (memStatus, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memStatus{}, err
	}
	var m memStatus
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *float64
		switch k {
		case "RssAnon":
			dst = &m.anon
		case "RssFile":
			dst = &m.file
		case "RssShmem":
			dst = &m.shmem
		default:
			continue
		}
		var kb float64
		if _, err := fmt.Sscanf(strings.TrimSpace(v), "%f kB", &kb); err != nil {
			return memStatus{}, fmt.Errorf("/proc/%d/status: %s: %w", pid, line, err)
		}
		*dst = kb / 1024
		found++
	}
	if found != 3 {
		return memStatus{}, fmt.Errorf("/proc/%d/status: no RssAnon, RssFile and RssShmem", pid)
	}
	return m, nil
}
