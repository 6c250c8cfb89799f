package simcluster

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// KubeconfigEnv names a running cluster's kubeconfig for tests to share: `make test`
// starts one cluster and sets it, so each test package does not start its own.
const KubeconfigEnv = "DEPLOYD_TEST_KUBECONFIG"

// Env is the cluster a test package uses.
type Env struct {
	// Config reaches the cluster with cluster-admin rights.
	Config *rest.Config
	// Kubeconfig is the same access as a file, for subprocesses.
	Kubeconfig string
	// Client is a clientset for Config.
	Client kubernetes.Interface
}

// Main runs a test package's tests against a cluster: the one $DEPLOYD_TEST_KUBECONFIG
// names, or one it starts and stops around the tests. Use it from TestMain:
//
//	var env *simcluster.Env
//	func TestMain(m *testing.M) { os.Exit(simcluster.Main(m, &env)) }
func Main(m *testing.M, env **Env) int {
	if path := os.Getenv(KubeconfigEnv); path != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "simcluster: %s=%s: %v\n", KubeconfigEnv, path, err)
			return 1
		}
		*env = newEnv(cfg, path)
		return m.Run()
	}
	opts := DefaultOptions()
	opts.Progress = os.Stderr
	c, err := Start(context.Background(), opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// A test binary interrupted by Ctrl-C or go test's timeout still stops the cluster.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		_ = c.Stop()
		os.Exit(130)
	}()
	*env = newEnv(c.Config, c.Kubeconfig)
	code := m.Run()
	signal.Stop(sig)
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "simcluster: stopping: %v\n", err)
	}
	return code
}

func newEnv(cfg *rest.Config, kubeconfig string) *Env {
	cfg.QPS, cfg.Burst = 200, 400
	return &Env{Config: cfg, Kubeconfig: kubeconfig, Client: kubernetes.NewForConfigOrDie(cfg)}
}

var nonName = regexp.MustCompile(`[^a-z0-9-]+`)

// Namespace creates a namespace of its own for the test, named after it, ready for
// pods (its default ServiceAccount exists), and deletes it when the test ends.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	base := strings.Trim(nonName.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(base) > 50 {
		base = strings.Trim(base[:50], "-")
	}
	name := base + "-" + randomHex(3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := e.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = e.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := e.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("namespace %s: default ServiceAccount never appeared: %v", name, err)
	}
	return name
}
