package render

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"gopkg.in/yaml.v3"
	"sigs.k8s.io/kustomize/api/types"
)

// kustomize builds dir's kustomization in a worker process, after refusing up front,
// with the file and line, what the worker would refuse anyway: fields that reach the
// network or set global state.
func kustomize(ctx context.Context, files map[string][]byte, dir string, lim Limits) ([]Object, error) {
	for name, content := range files {
		if isKustomizationFile(name) {
			if err := checkKustomization(name, content, lim); err != nil {
				return nil, err
			}
		}
	}
	return workers.build(ctx, request{Files: files, Dir: dir, Limits: lim})
}

func isKustomizationFile(name string) bool {
	base := path.Base(name)
	for _, k := range kustomizationNames {
		if base == k {
			return true
		}
	}
	return false
}

// checkKustomization reads a kustomization as kustomize itself does (its own type, its
// own unmarshal, which matches field names in any case, and its own fix-up of deprecated
// fields) and refuses the openapi and helm fields and every reference that is not a path
// in the repo.
func checkKustomization(name string, content []byte, lim Limits) error {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(content)).Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil // kustomize reports it, with context
	}
	if n := AliasNodes(&doc); n > lim.MaxAliasNodes {
		return aliasError(name, 1, lim.MaxAliasNodes)
	}
	var k types.Kustomization
	if err := k.Unmarshal(content); err != nil {
		return nil // kustomize reports it, with context
	}
	k.FixKustomization()
	refuse := func(key, value, msg string) error {
		return &Error{File: name, Line: lineOf(&doc, key, value), Msg: msg}
	}
	if len(k.OpenAPI) > 0 {
		return refuse("openapi", "", "the openapi field is refused: a custom schema changes kustomize's state for every repo deployd builds; remove it (deployd applies with the cluster's own schema)")
	}
	if len(k.HelmCharts) > 0 || len(k.HelmChartInflationGenerator) > 0 || k.HelmGlobals != nil {
		return refuse("helmCharts", "", "helm charts are refused: inflating one runs helm and fetches charts; render the chart into the repo")
	}
	for _, ref := range references(&k) {
		if isRemote(ref) {
			return refuse("", ref, fmt.Sprintf("remote reference %q is refused: deployd builds only what is in the repo, without network; vendor it into the repo", ref))
		}
	}
	return nil
}

// references are the values of every field kustomize's loader takes as a path, a
// directory or a URL.
func references(k *types.Kustomization) []string {
	var refs []string
	refs = append(refs, k.Resources...) // with bases, after FixKustomization
	refs = append(refs, k.Components...)
	refs = append(refs, k.Crds...)
	refs = append(refs, k.Configurations...)
	refs = append(refs, k.Generators...)
	refs = append(refs, k.Transformers...)
	refs = append(refs, k.Validators...)
	for _, p := range k.PatchesStrategicMerge {
		refs = append(refs, string(p))
	}
	for _, p := range append(k.Patches, k.PatchesJson6902...) {
		refs = append(refs, p.Path)
	}
	for _, r := range k.Replacements {
		refs = append(refs, r.Path)
	}
	kv := func(s types.KvPairSources) {
		for _, f := range s.FileSources {
			_, file, found := strings.Cut(f, "=")
			if !found {
				file = f
			}
			refs = append(refs, f, file)
		}
		refs = append(refs, s.EnvSources...)
		refs = append(refs, s.EnvSource)
	}
	for _, g := range k.ConfigMapGenerator {
		kv(g.KvPairSources)
	}
	for _, g := range k.SecretGenerator {
		kv(g.KvPairSources)
	}
	return refs
}

// isRemote reports whether kustomize would fetch ref: http(s) for files, git for
// directories (a URL, scp-like git@host:path, or a host path with a ref).
func isRemote(ref string) bool {
	r := strings.ToLower(strings.TrimSpace(ref))
	return strings.Contains(r, "://") || strings.HasPrefix(r, "git@") || strings.HasPrefix(r, "github.com") ||
		strings.HasPrefix(r, "gitlab.com") || strings.HasPrefix(r, "bitbucket.org") || strings.Contains(r, "?ref=") ||
		strings.Contains(r, "?version=") || strings.Contains(r, "_git/") || strings.HasPrefix(r, "//")
}

// lineOf is the line of the first mapping key equal to key (in any case, as kustomize
// reads them) or, with key empty, of the first scalar that is value; 0 if none is.
func lineOf(n *yaml.Node, key, value string) int {
	if key != "" && n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if strings.EqualFold(n.Content[i].Value, key) {
				return n.Content[i].Line
			}
		}
	}
	if key == "" && n.Kind == yaml.ScalarNode && strings.Contains(n.Value, value) {
		return n.Line
	}
	for _, c := range n.Content {
		if l := lineOf(c, key, value); l > 0 {
			return l
		}
	}
	return 0
}
