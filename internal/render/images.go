package render

import (
	"fmt"
	"sort"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// MaxImages bounds the distinct images Images returns: a promotion compares the images of
// two environments, and the list is kept in every deployment record and GitHub deployment.
const MaxImages = 100

// podSpecPaths are where each workload kind keeps its pod spec.
var podSpecPaths = map[string][]string{
	"Pod":                   {"spec"},
	"Deployment":            {"spec", "template", "spec"},
	"StatefulSet":           {"spec", "template", "spec"},
	"DaemonSet":             {"spec", "template", "spec"},
	"ReplicaSet":            {"spec", "template", "spec"},
	"ReplicationController": {"spec", "template", "spec"},
	"Job":                   {"spec", "template", "spec"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template", "spec"},
}

// Images returns the distinct images of every container and init container of every pod
// template in objs, sorted. More than MaxImages distinct images is an error: the list is
// then not complete, and a promotion must not pass on part of it.
func Images(objs []Object) ([]string, error) {
	seen := map[string]bool{}
	for _, o := range objs {
		path, ok := podSpecPaths[o.GetKind()]
		if !ok || o.Unstructured == nil {
			continue
		}
		for _, field := range []string{"containers", "initContainers"} {
			list, _, _ := unstructured.NestedSlice(o.Object, append(path[:len(path):len(path)], field)...)
			for _, c := range list {
				m, _ := c.(map[string]any)
				img, _ := m["image"].(string)
				if img == "" || seen[img] {
					continue
				}
				if len(seen) == MaxImages {
					return nil, fmt.Errorf("the manifests render to more than %d distinct images: deployd compares at most %d for a promotion", MaxImages, MaxImages)
				}
				seen[img] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for img := range seen {
		out = append(out, img)
	}
	sort.Strings(out)
	return out, nil
}
