package apply

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
)

// TestWaitEstablishedSaysWhy: a wait for a CRD that ends early says why (cancelled,
// refused) and a timed-out one tells the last read's error.
func TestWaitEstablishedSaysWhy(t *testing.T) {
	nobody := rest.CopyConfig(env.Config)
	nobody.Impersonate.UserName = "nobody-" + env.Namespace(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		cfg     *rest.Config
		ctx     context.Context
		timeout time.Duration
		want    func(error) bool
		says    string
	}{
		{"a cancelled wait says it was cancelled", env.Config, cancelled, time.Minute,
			func(err error) bool { return errors.Is(err, context.Canceled) }, "waiting until Established"},
		{"a refused read ends the wait at once", nobody, context.Background(), time.Minute,
			apierrors.IsForbidden, "reading it while waiting until Established"},
		{"a CRD never found times out with the last read's error", env.Config, context.Background(), 300 * time.Millisecond,
			apierrors.IsNotFound, "not Established within 300ms; the last read failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := DefaultOptions()
			opts.StateNamespace = env.Namespace(t)
			opts.CRDTimeout = tt.timeout
			a, err := New(tt.cfg, opts)
			if err != nil {
				t.Fatal(err)
			}
			crd := &unstructured.Unstructured{}
			crd.SetAPIVersion("apiextensions.k8s.io/v1")
			crd.SetKind("CustomResourceDefinition")
			crd.SetName("missings.example.com")
			admin, err := New(env.Config, opts)
			if err != nil {
				t.Fatal(err)
			}
			m, err := admin.mapping(crd.GroupVersionKind())
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = a.waitEstablished(tt.ctx, []*item{{obj: crd, mapping: m}})
			if err == nil || !tt.want(err) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("error %v, want one saying %q with its cause", err, tt.says)
			}
			if tt.timeout == time.Minute && time.Since(start) > 30*time.Second {
				t.Errorf("the wait took %v; it should have ended at once", time.Since(start))
			}
		})
	}
}
