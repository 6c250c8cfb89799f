package apply

import (
	"context"
	"slices"
	"testing"
)

// TestCapabilities: a chart sees the API server's own version and what its discovery serves.
func TestCapabilities(t *testing.T) {
	a, err := New(env.Config, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	caps, err := a.Capabilities(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	server, err := env.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if caps.KubeVersion != server.GitVersion {
		t.Errorf("KubeVersion = %q, want the API server's %q", caps.KubeVersion, server.GitVersion)
	}
	for _, want := range []string{"v1", "v1/ConfigMap", "apps/v1", "apps/v1/Deployment", "apiextensions.k8s.io/v1/CustomResourceDefinition"} {
		if !slices.Contains(caps.APIVersions, want) {
			t.Errorf("APIVersions lack %q", want)
		}
	}
	if slices.Contains(caps.APIVersions, "example.com/v1/Widget") {
		t.Errorf("APIVersions hold a kind the cluster does not serve")
	}
}
