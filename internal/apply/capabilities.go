package apply

import (
	"context"
	"fmt"
	"sort"

	"k8s.io/client-go/discovery"

	"github.com/deployd/deployd/internal/render"
)

// Capabilities are what a Helm chart's templates see of the cluster: the API server's
// version, and every group/version and group/version/Kind it serves (from discovery,
// cached with the REST mapper's and refreshed with it).
func (a *Applier) Capabilities(ctx context.Context) (*render.Capabilities, error) {
	dc := discovery.ToDiscoveryInterfaceWithContext(a.disco)
	v, err := dc.ServerVersionWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the API server's version: %w", err)
	}
	_, lists, err := dc.ServerGroupsAndResourcesWithContext(ctx)
	if _, partial := discovery.GroupDiscoveryFailedErrorGroups(err); err != nil && !partial {
		return nil, fmt.Errorf("discovering the API server's resources: %w", err)
	}
	seen := map[string]bool{}
	for _, l := range lists {
		seen[l.GroupVersion] = true
		for _, r := range l.APIResources {
			seen[l.GroupVersion+"/"+r.Kind] = true
		}
	}
	caps := &render.Capabilities{KubeVersion: v.GitVersion}
	for gv := range seen {
		caps.APIVersions = append(caps.APIVersions, gv)
	}
	sort.Strings(caps.APIVersions)
	return caps, nil
}
