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
// network or set global state, in dir's kustomization and those it includes.
func kustomize(ctx context.Context, files map[string][]byte, dir string, lim Limits) ([]Object, error) {
	if err := checkTree(files, dir, lim, map[string]bool{}); err != nil {
		return nil, err
	}
	out, err := workers.build(ctx, request{Files: files, Dir: dir, Limits: lim})
	return out.objects, err
}

// checkTree checks the kustomization in dir, then those of the directories it includes.
func checkTree(files map[string][]byte, dir string, lim Limits, seen map[string]bool) error {
	if seen[dir] || len(seen) > lim.MaxReads {
		return nil // the worker reports cycles and counts reads
	}
	seen[dir] = true
	for _, name := range kustomizationNames {
		file := path.Join(dir, name)
		content, ok := files[file]
		if !ok {
			continue
		}
		k, err := checkKustomization(file, content, lim)
		if err != nil || k == nil {
			return err
		}
		for _, ref := range append(k.Resources, k.Components...) {
			sub := strings.TrimPrefix(path.Join("/", dir, ref), "/") // as kustomize's in-memory filesystem resolves it
			if IsKustomization(files, sub) {
				if err := checkTree(files, sub, lim, seen); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return nil
}

// checkKustomization reads a kustomization as kustomize itself does (its own type, its
// own unmarshal, which matches field names in any case, and its own fix-up of deprecated
// fields) and refuses the openapi and helm fields and every reference that is not a path
// in the repo.
// It returns the kustomization, or nil if kustomize could not read it (the worker reports why).
func checkKustomization(name string, content []byte, lim Limits) (*types.Kustomization, error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(content)).Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil
	}
	if n := AliasNodes(&doc); n > lim.MaxAliasNodes {
		return nil, aliasError(name, 1, lim.MaxAliasNodes)
	}
	var k types.Kustomization
	if err := k.Unmarshal(content); err != nil {
		return nil, nil
	}
	k.FixKustomization()
	refuse := func(line int, msg string) (*types.Kustomization, error) {
		return nil, &Error{File: name, Line: line, Msg: msg}
	}
	if len(k.OpenAPI) > 0 {
		return refuse(keyLine(&doc, "openapi"), "the openapi field is refused: a custom schema changes kustomize's state for every repo deployd builds; remove it (deployd applies with the cluster's own schema)")
	}
	if len(k.HelmCharts) > 0 || len(k.HelmChartInflationGenerator) > 0 || k.HelmGlobals != nil {
		return refuse(keyLine(&doc, "helmCharts", "helmChartInflationGenerator", "helmGlobals"), "helm charts are refused: inflating one runs helm and fetches charts; render the chart into the repo")
	}
	first, firstLine := "", 0
	for _, ref := range references(&k) {
		if !isRemote(ref) {
			continue
		}
		if l := valueLine(&doc, ref); first == "" || (l > 0 && l < firstLine) {
			first, firstLine = ref, l
		}
	}
	if first != "" {
		return refuse(firstLine, fmt.Sprintf("remote reference %q is refused: deployd builds only what is in the repo, without network; vendor it into the repo", first))
	}
	return &k, nil
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
	//lint:ignore SA1019 deprecated, but kustomize still loads it
	for _, p := range k.PatchesStrategicMerge {
		refs = append(refs, string(p))
	}
	//lint:ignore SA1019 deprecated, but kustomize still loads it
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

// keyLine is the line of the first of keys at the top of the kustomization, matched in
// any case as kustomize matches them; 0 if none is there.
func keyLine(doc *yaml.Node, keys ...string) int {
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return 0
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		for _, k := range keys {
			if strings.EqualFold(m.Content[i].Value, k) {
				return m.Content[i].Line
			}
		}
	}
	return 0
}

// valueLine is the line of the first scalar whose value is value; 0 if none is.
func valueLine(n *yaml.Node, value string) int {
	if n.Kind == yaml.ScalarNode && n.Value == value {
		return n.Line
	}
	for _, c := range n.Content {
		if l := valueLine(c, value); l > 0 {
			return l
		}
	}
	return 0
}
