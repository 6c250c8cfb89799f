// Package kube connects deployd to its cluster: it finds the credentials (in-cluster,
// then a kubeconfig) and tells whether the API server answers.
package kube

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ConfigOptions say where deployd's cluster credentials come from.
type ConfigOptions struct {
	// Kubeconfig is an explicit kubeconfig path; empty means in-cluster, then $KUBECONFIG, then ~/.kube/config.
	Kubeconfig string
	// Context is the kubeconfig context to use; empty means its current context.
	Context string
	// QPS and Burst bound deployd's requests to the API server (client-go's token
	// bucket); 0 keeps client-go's own default of 5 and 10, far too low for deploying
	// many repos at once.
	QPS   float32
	Burst int
}

// DefaultQPS and DefaultBurst are deployd's request limits: enough to deploy 1,000 repos
// of 10 objects in under two minutes, while API Priority and Fairness on the server
// keeps deployd from crowding out other clients.
const (
	DefaultQPS   = 200
	DefaultBurst = 400
)

// RESTConfig returns the client configuration the options lead to.
func RESTConfig(opts ConfigOptions) (*rest.Config, error) {
	cfg, err := loadConfig(opts)
	if err != nil {
		return nil, err
	}
	if opts.QPS > 0 {
		cfg.QPS = opts.QPS
	}
	if opts.Burst > 0 {
		cfg.Burst = opts.Burst
	}
	return cfg, nil
}

func loadConfig(opts ConfigOptions) (*rest.Config, error) {
	if opts.Kubeconfig == "" && opts.Context == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		} else if !errors.Is(err, rest.ErrNotInCluster) {
			return nil, fmt.Errorf("in-cluster config: %w", err)
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = opts.Kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: opts.Context})
	cfg, err := cc.ClientConfig()
	if clientcmd.IsEmptyConfig(err) {
		return nil, errors.New("no cluster to talk to: not running in a pod, and no kubeconfig in $KUBECONFIG or ~/.kube/config; pass --kubeconfig")
	}
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	return cfg, nil
}

// Prober asks the API server whether it is ready.
type Prober struct {
	client rest.Interface
}

// NewProber returns a prober for the cluster cfg reaches.
func NewProber(cfg *rest.Config) (*Prober, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating a client for %s: %w", cfg.Host, err)
	}
	return &Prober{client: dc.RESTClient()}, nil
}

// Probe calls the API server's /readyz; ctx bounds how long it may take.
func (p *Prober) Probe(ctx context.Context) error {
	var code int
	err := p.client.Get().AbsPath("/readyz").Do(ctx).StatusCode(&code).Error()
	if err != nil {
		return fmt.Errorf("cluster not reachable: %w", err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("cluster not ready: /readyz answered %d", code)
	}
	return nil
}

// CountRequests makes every client built from cfg report each request it sends to the
// API server (its method and answered status code; 0 when none came) to count.
func CountRequests(cfg *rest.Config, count func(method string, code int)) {
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			code := 0
			if resp != nil {
				code = resp.StatusCode
			}
			count(req.Method, code)
			return resp, err
		})
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// Mapping resolves a kind to its REST mapping, refreshing the mapper's discovery once on a
// miss so kinds of CRDs created since the last discovery are found.
func Mapping(mapper meta.ResettableRESTMapper, gk schema.GroupKind, version string) (*meta.RESTMapping, error) {
	m, err := mapper.RESTMapping(gk, version)
	if meta.IsNoMatchError(err) {
		mapper.Reset()
		m, err = mapper.RESTMapping(gk, version)
	}
	return m, err
}
