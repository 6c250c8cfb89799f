package render

import (
	"fmt"
	"path"
	"strings"

	"gopkg.in/yaml.v3"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// kustomize builds dir's kustomization over an in-memory copy of the commit's files.
// Remote bases are refused: building one would clone from the network.
func kustomize(files map[string][]byte, dir string) ([]Object, error) {
	if err := refuseRemote(files); err != nil {
		return nil, err
	}
	fs := filesys.MakeFsInMemory()
	for name, content := range files {
		if err := fs.WriteFile("/"+name, content); err != nil {
			return nil, fmt.Errorf("loading %s for kustomize: %w", name, err)
		}
	}
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = types.LoadRestrictionsNone // overlays reach ../base, inside the repo
	resMap, err := krusty.MakeKustomizer(opts).Run(fs, "/"+dir)
	if err != nil {
		return nil, &Error{File: dir, Msg: "kustomize build: " + strings.ReplaceAll(err.Error(), "'/", "'")}
	}
	var objs []Object
	for _, res := range resMap.Resources() {
		js, err := res.MarshalJSON()
		if err != nil {
			return nil, &Error{File: dir, Msg: fmt.Sprintf("kustomize output %s: %v", res.CurId(), err)}
		}
		u, err := decodeJSON(js)
		if err != nil {
			return nil, &Error{File: dir, Msg: fmt.Sprintf("kustomize output %s: %v", res.CurId(), err)}
		}
		objs = append(objs, Object{Unstructured: u, Source: "kustomize " + dir})
	}
	return objs, nil
}

// refuseRemote rejects any kustomization that names a URL among its resources, bases or components.
func refuseRemote(files map[string][]byte) error {
	for name, content := range files {
		base := path.Base(name)
		if base != "kustomization.yaml" && base != "kustomization.yml" && base != "Kustomization" {
			continue
		}
		var k struct {
			Resources  []yaml.Node `yaml:"resources"`
			Bases      []yaml.Node `yaml:"bases"`
			Components []yaml.Node `yaml:"components"`
		}
		if err := yaml.Unmarshal(content, &k); err != nil {
			continue // kustomize reports it, with context
		}
		for _, list := range [][]yaml.Node{k.Resources, k.Bases, k.Components} {
			for _, n := range list {
				if isRemote(n.Value) {
					return &Error{File: name, Line: n.Line, Msg: fmt.Sprintf("remote base %q is refused: deployd builds only what is in the repo; vendor it into the repo", n.Value)}
				}
			}
		}
	}
	return nil
}

func isRemote(ref string) bool {
	r := strings.ToLower(ref)
	return strings.Contains(r, "://") || strings.HasPrefix(r, "git@") || strings.HasPrefix(r, "github.com/") ||
		strings.HasPrefix(r, "gitlab.com/") || strings.HasPrefix(r, "bitbucket.org/") || strings.Contains(r, "?ref=")
}
