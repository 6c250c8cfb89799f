package main

import (
	"strings"
	"testing"

	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"
)

// TestClusterConfig checks what can be checked without Docker: the kind config parses
// and maps deployd's NodePort to the host port.
func TestClusterConfig(t *testing.T) {
	var c v1alpha4.Cluster
	if err := yaml.UnmarshalStrict([]byte(clusterConfig(18080)), &c); err != nil {
		t.Fatal(err)
	}
	m := c.Nodes[0].ExtraPortMappings[0]
	if m.ContainerPort != nodePortInCluster || m.HostPort != 18080 || m.ListenAddress != "127.0.0.1" {
		t.Errorf("port mapping %+v", m)
	}
}

func TestUsage(t *testing.T) {
	var out strings.Builder
	if err := run(nil, &out); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("no arguments: %v", err)
	}
}
