package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/render"
	"github.com/deployd/deployd/internal/simcluster"
	"github.com/deployd/deployd/pkg/client"
)

var (
	env    *simcluster.Env
	binary string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "deployd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "deployd")
	build := exec.Command("go", "build", "-o", binary, "github.com/deployd/deployd/cmd/deployd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building deployd:", err)
		os.Exit(1)
	}
	code := simcluster.Main(m, &env)
	os.RemoveAll(dir)
	os.Exit(code)
}

// applyDir applies every manifest of dir with server-side apply, as cluster-admin.
func applyDir(t *testing.T, dir string) {
	t.Helper()
	files := map[string][]byte{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files["k8s/"+e.Name()] = b
	}
	objs, err := render.Render(context.Background(), files, "k8s", render.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(env.Config)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(discovery.NewDiscoveryClientForConfigOrDie(env.Config)))
	for _, o := range objs {
		m, err := mapper.RESTMapping(o.GroupVersionKind().GroupKind(), o.GroupVersionKind().Version)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := o.MarshalJSON()
		force := true
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if o.GetNamespace() != "" {
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		if _, err := ri.Patch(context.Background(), o.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "e2e", Force: &force}); err != nil {
			t.Fatalf("applying %s: %v", o, err)
		}
	}
}

// serviceAccountConfig returns a kubeconfig carrying a token of deployd's ServiceAccount.
func serviceAccountConfig(t *testing.T) string {
	t.Helper()
	tr, err := env.Client.CoreV1().ServiceAccounts("deployd").CreateToken(context.Background(), "deployd",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{Host: env.Config.Host, BearerToken: tr.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: env.Config.CAData}}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := simcluster.WriteKubeconfig(path, cfg, "deployd"); err != nil {
		t.Fatal(err)
	}
	return path
}

func ptr[T any](v T) *T { return &v }

// writer returns a function that writes a file into dir and returns its path.
func writer(t *testing.T, dir string) func(name, content string) string {
	return func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
}

// daemon is a running deployd binary.
type daemon struct {
	cmd     *exec.Cmd
	addr    string
	logs    *strings.Builder
	logDone chan struct{}
	client  *client.ClientWithResponses
}

// startBinary runs the built deployd on a free port until the test ends.
func startBinary(t *testing.T, args ...string) *daemon {
	t.Helper()
	d := &daemon{addr: freeAddr(t), logs: &strings.Builder{}, logDone: make(chan struct{})}
	d.cmd = exec.Command(binary, append(args, "--listen", d.addr, "--log-format", "json")...)
	stderr, _ := d.cmd.StderrPipe()
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.logs.WriteString(sc.Text() + "\n")
		}
		close(d.logDone)
	}()
	t.Cleanup(func() { _ = d.cmd.Process.Kill(); _ = d.cmd.Wait() })
	c, err := client.NewClientWithResponses("http://" + d.addr)
	if err != nil {
		t.Fatal(err)
	}
	d.client = c
	return d
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// app is the sample app every e2e test deploys.
const app = gittest.SampleApp

// TestShippedRBAC applies k8s/, runs the deployd binary with its ServiceAccount's token,
// and sees a sample app (with a Secret, which deployd may write but not read cluster-wide)
// deployed while a repo that tries to create a ClusterRole is refused.
func TestShippedRBAC(t *testing.T) {
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	applyDir(t, filepath.Join(root, "k8s"))

	srv := gittest.NewServer(t)
	srv.NewRepo(t, "haraldsk/an-application").Commit("main", "app", map[string]string{"deploy/manifests/app.yaml": app,
		"deploy/manifests/secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {password: hunter2}\n"})
	srv.NewRepo(t, "haraldsk/escalate").Commit("main", "cluster role", map[string]string{"deploy/manifests/role.yaml": "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: escalate}\nrules: [{apiGroups: ['*'], resources: ['*'], verbs: ['*']}]\n"})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "repos.yaml")
	os.WriteFile(cfg, []byte("repos:\n"+
		"  - {name: haraldsk/an-application, url: '"+srv.RepoURL("haraldsk/an-application")+"', namespace: an-application, environment: dev, interval: 0}\n"+
		"  - {name: haraldsk/escalate, url: '"+srv.RepoURL("haraldsk/escalate")+"', namespace: an-other-application, environment: dev, interval: 0, allowClusterScoped: true}\n"), 0o644)
	d := startBinary(t, "--config", cfg, "--kubeconfig", serviceAccountConfig(t), "--cache-dir", filepath.Join(dir, "cache"), "--namespace", "deployd")
	cmd, logs, logDone, c := d.cmd, d.logs, d.logDone, d.client
	phases := func() map[string]client.Summary {
		res, err := c.ListDeploymentsWithResponse(context.Background(), &client.ListDeploymentsParams{})
		out := map[string]client.Summary{}
		if err != nil || res.JSON200 == nil {
			return out
		}
		for _, d := range res.JSON200.Deployments {
			out[d.Repo] = d
		}
		return out
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		p := phases()
		if p["haraldsk/an-application"].Phase == "succeeded" && p["haraldsk/escalate"].Phase == "error" {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Signal(os.Interrupt)
			<-logDone
			t.Fatalf("phases %+v\n%s", p, logs.String())
		}
		time.Sleep(200 * time.Millisecond) // polling the binary's API, with a deadline
	}
	rec, err := c.GetHistoryRecordWithResponse(context.Background(), "haraldsk", "escalate", 1, &client.GetHistoryRecordParams{})
	if err != nil || rec.JSON200 == nil || rec.JSON200.Error == nil || !strings.Contains(*rec.JSON200.Error, "forbidden") {
		t.Errorf("the ClusterRole's refusal: %v %s", err, rec.Body)
	}
	if _, err := env.Client.RbacV1().ClusterRoles().Get(context.Background(), "escalate", metav1.GetOptions{}); err == nil {
		t.Error("the ClusterRole exists")
	}
	st, _ := c.GetDeploymentWithResponse(context.Background(), "haraldsk", "an-application", &client.GetDeploymentParams{})
	var kinds []string
	for _, o := range st.JSON200.Environments[0].Objects {
		kinds = append(kinds, o.Kind+":"+string(o.Status))
	}
	sort.Strings(kinds)
	if strings.Join(kinds, ",") != "ConfigMap:Current,Deployment:Current,Secret:Current,Service:Current" {
		t.Errorf("objects %v", kinds)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	<-logDone // the logs are read once the process has written its last line
	if err := cmd.Wait(); err != nil {
		t.Errorf("deployd exited with %v after SIGINT:\n%s", err, logs.String())
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "forbidden") && !strings.Contains(l, "escalate") {
			t.Errorf("deployd was refused something it needs: %s", l)
		}
	}
}
