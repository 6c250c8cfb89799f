// Package render turns the manifests at a commit into Kubernetes objects: plain YAML
// and JSON files, a kustomization, or a Helm chart. Errors name the file and line.
//
// Every repo is hostile input, so rendering runs on a budget (Limits) checked while the
// work is done: plain files are decoded in this process, one document at a time, each
// counted before the next is read, and aliases are priced on the node tree before anything
// expands them. Kustomize is built in a worker: a child process of the same binary
// (worker.go, pool.go), because in this process it cannot be bounded. Its loader fetches
// http(s) and runs git for any path that looks remote, through a client and a cloner that
// its API does not let us replace; its openapi field sets global schema state; it is not
// safe for concurrent builds; and nothing stops its memory from outside. A worker caps its
// data mappings (RLIMIT_DATA), refuses itself sockets and exec (seccomp), offers itself to
// the OOM killer first, and is killed when the render's context ends. Argo CD renders in a
// separate repo-server process for the same reasons. Helm charts are templated in the same
// workers (helm.go): a chart's templates are not bounded in time or memory either.
// Starting a worker and warming kustomize up costs about 150 ms, so a worker serves builds
// one after another (retired when one panics, passes a limit or changes kustomize's
// schema) and one waits warm.
package render

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/deployd/deployd/internal/yamlsyntax"
)

// Object is a rendered object and where it came from.
type Object struct {
	*unstructured.Unstructured
	// Source is "file:line" (plain mode) or "kustomize <dir>".
	Source string
}

// String is "Kind/name" or "Kind/namespace/name".
func (o Object) String() string {
	if ns := o.GetNamespace(); ns != "" {
		return o.GetKind() + "/" + ns + "/" + o.GetName()
	}
	return o.GetKind() + "/" + o.GetName()
}

// Error is a problem with the manifests, located in a file.
type Error struct {
	// File is the path in the repo.
	File string
	// Line is 1-based; 0 when not known.
	Line int
	// Msg says what is wrong.
	Msg string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

var kustomizationNames = []string{"kustomization.yaml", "kustomization.yml", "Kustomization"}

// Limits bound one render. Each is checked while rendering, and one step over it fails
// the render with a message naming the limit.
type Limits struct {
	// MaxObjects is how many objects the manifests may render to.
	MaxObjects int
	// MaxBytes bounds the rendered objects' JSON, all together.
	MaxBytes int64
	// MaxAliasNodes bounds the nodes YAML aliases may add to one file when expanded
	// (a "billion laughs" document is a few hundred bytes that expand to gigabytes).
	MaxAliasNodes int
	// MaxMemory bounds the memory of a kustomize build's process (its RLIMIT_DATA).
	MaxMemory int64
	// MaxReads bounds how many times kustomize may read a file, counting each read
	// again: a "diamond" of bases that include one another twice doubles per level.
	MaxReads int
}

// DefaultLimits fit a repo of 1,000 objects in deployd's 512 Mi pod (two kustomize builds
// may run at once, 256 MiB each, and the OOM killer takes a worker first). 10,000 reads
// are ten for each file a repo's manifests may have.
func DefaultLimits() Limits {
	return Limits{MaxObjects: 1000, MaxBytes: 32 << 20, MaxAliasNodes: 100_000, MaxMemory: 256 << 20, MaxReads: 10_000}
}

// DefaultTimeout is how long a caller should let one render take.
const DefaultTimeout = 30 * time.Second

// Render renders the manifests in dir of files (repo path → content), within lim and
// until ctx is done.
func Render(ctx context.Context, files map[string][]byte, dir string, lim Limits) ([]Object, error) {
	res, err := RenderWith(ctx, files, dir, Options{Limits: lim})
	return res.Objects, err
}

// The renderers Result.Renderer names.
const (
	RendererPlain     = "plain"
	RendererKustomize = "kustomize"
	RendererHelm      = "helm"
)

// Options say how to render a repo's manifests. Only Limits matter for plain files and
// kustomizations; the rest are a Helm chart's release and values.
type Options struct {
	// Limits bound the render.
	Limits Limits
	// Environment names the values file beside Chart.yaml (values-{environment}.yaml)
	// and replaces {environment} in Values.
	Environment string
	// Namespace is .Release.Namespace.
	Namespace string
	// ReleaseName is .Release.Name.
	ReleaseName string
	// Values are values files (repo paths), applied in order after the chart's own.
	Values []string
	// Set are values applied last, over every file.
	Set map[string]any
	// Capabilities are the cluster's, for .Capabilities; nil uses Helm's defaults.
	Capabilities *Capabilities
}

// Capabilities are what a chart's templates see of the cluster (.Capabilities).
type Capabilities struct {
	// KubeVersion is the API server's version, such as v1.34.1.
	KubeVersion string
	// APIVersions are "group/version" and "group/version/Kind" of every served resource.
	APIVersions []string
}

// Chart names a rendered Helm chart.
type Chart struct {
	Name       string
	Version    string
	AppVersion string
}

// Result is what a render produced and how.
type Result struct {
	Objects []Object
	// Renderer is RendererPlain, RendererKustomize or RendererHelm.
	Renderer string
	// Chart is the chart rendered (Renderer is RendererHelm), or nil.
	Chart *Chart
}

// RenderWith renders the manifests in dir of files as Render does, with a Helm chart's
// release and values from opts.
func RenderWith(ctx context.Context, files map[string][]byte, dir string, opts Options) (Result, error) {
	dir = path.Clean(dir)
	switch {
	case IsChart(files, dir):
		return helm(ctx, files, dir, opts)
	case IsKustomization(files, dir):
		objs, err := kustomize(ctx, files, dir, opts.Limits)
		return Result{Objects: objs, Renderer: RendererKustomize}, err
	}
	objs, err := plain(ctx, files, dir, opts.Limits)
	return Result{Objects: objs, Renderer: RendererPlain}, err
}

// budget counts what a render produced against its Limits.
type budget struct {
	lim     Limits
	dir     string
	objects int
	bytes   int64
}

// add counts one rendered object of n JSON bytes.
func (b *budget) add(n int) error {
	b.objects++
	b.bytes += int64(n)
	if b.objects > b.lim.MaxObjects {
		return tooManyObjects(b.dir, b.lim)
	}
	if b.bytes > b.lim.MaxBytes {
		return tooManyBytes(b.dir, b.lim)
	}
	return nil
}

func tooManyObjects(dir string, lim Limits) *Error {
	return &Error{File: dir, Msg: fmt.Sprintf("renders to more than the limit of %d objects per repo: split the repo", lim.MaxObjects)}
}

func tooManyBytes(dir string, lim Limits) *Error {
	size := fmt.Sprintf("%d bytes", lim.MaxBytes)
	if lim.MaxBytes%(1<<20) == 0 {
		size = fmt.Sprintf("%d MiB", lim.MaxBytes>>20)
	}
	return &Error{File: dir, Msg: fmt.Sprintf("renders to more than the limit of %s of objects: split the repo", size)}
}

// IsKustomization reports whether dir holds a kustomization file.
func IsKustomization(files map[string][]byte, dir string) bool {
	for _, name := range kustomizationNames {
		if _, ok := files[path.Join(path.Clean(dir), name)]; ok {
			return true
		}
	}
	return false
}

// plain reads every .yaml, .yml and .json file under dir, in lexical order.
func plain(ctx context.Context, files map[string][]byte, dir string, lim Limits) ([]Object, error) {
	var names []string
	for name := range files {
		if dir != "." && !strings.HasPrefix(name, dir+"/") {
			continue
		}
		switch strings.ToLower(path.Ext(name)) {
		case ".yaml", ".yml", ".json":
			names = append(names, name)
		}
	}
	sort.Strings(names)
	b := &budget{lim: lim, dir: dir}
	var objs []Object
	var errs []error
	for _, name := range names {
		got, err := decodeFile(ctx, name, files[name], b)
		objs = append(objs, got...)
		var over *budgetError
		if errors.As(err, &over) {
			return nil, over.err
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return objs, errors.Join(errs...)
}

// budgetError stops a render: past a limit, or when its context is done. Other errors
// are collected, so that one render reports every broken file.
type budgetError struct{ err error }

func (e *budgetError) Error() string { return e.err.Error() }

// decodeFile reads every document of a YAML (or JSON) file; kind: List is flattened.
// Each object is counted in b before the next document is read.
func decodeFile(ctx context.Context, name string, data []byte, b *budget) ([]Object, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var objs []Object
	aliasNodes := 0
	for {
		if err := ctx.Err(); err != nil {
			return nil, &budgetError{&Error{File: name, Msg: fmt.Sprintf("rendering stopped: %v", context.Cause(ctx))}}
		}
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			e := yamlsyntax.Explain(data, err)
			return objs, &Error{File: name, Line: e.Line, Msg: "YAML syntax error: " + e.Message}
		}
		if len(doc.Content) == 0 || (doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null") {
			continue // an empty document
		}
		line := doc.Content[0].Line
		if aliasNodes += AliasNodes(&doc); aliasNodes > b.lim.MaxAliasNodes {
			return nil, &budgetError{aliasError(name, line, b.lim.MaxAliasNodes)}
		}
		js, u, err := toUnstructured(&doc)
		if err != nil {
			return objs, &Error{File: name, Line: line, Msg: err.Error()}
		}
		src := fmt.Sprintf("%s:%d", name, line)
		if !u.IsList() {
			if err := b.add(len(js)); err != nil {
				return nil, &budgetError{err}
			}
			objs = append(objs, Object{Unstructured: u, Source: src})
			continue
		}
		list, err := u.ToList()
		if err != nil {
			return objs, &Error{File: name, Line: line, Msg: "kind List: " + err.Error()}
		}
		for i := range list.Items {
			if err := b.add(len(js) / len(list.Items)); err != nil {
				return nil, &budgetError{err}
			}
			objs = append(objs, Object{Unstructured: &list.Items[i], Source: src})
		}
	}
}

func aliasError(name string, line, limit int) error {
	return &Error{File: name, Line: line, Msg: fmt.Sprintf("YAML aliases expand to more than %d nodes (excessive aliasing): write the values out", limit)}
}

// AliasNodes is how many nodes the aliases in n add when expanded, computed without
// expanding them. It saturates instead of overflowing.
func AliasNodes(n *yaml.Node) int {
	sizes := map[*yaml.Node]int{}
	var size func(n *yaml.Node) int
	size = func(n *yaml.Node) int {
		if s, ok := sizes[n]; ok {
			return s
		}
		sizes[n] = 1 // an alias cycle counts once
		s := 1
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			s = size(n.Alias)
		}
		for _, c := range n.Content {
			s = min(s+size(c), 1<<40)
		}
		sizes[n] = s
		return s
	}
	literal := 0
	var count func(n *yaml.Node)
	count = func(n *yaml.Node) {
		literal++
		for _, c := range n.Content {
			count(c)
		}
	}
	count(n)
	return max(size(n)-literal, 0)
}

func toUnstructured(doc *yaml.Node) ([]byte, *unstructured.Unstructured, error) {
	if doc.Content[0].Kind != yaml.MappingNode {
		return nil, nil, errors.New("a manifest must be a mapping (apiVersion, kind, metadata, ...)")
	}
	raw, err := yaml.Marshal(doc)
	if err != nil {
		return nil, nil, err
	}
	js, err := sigsyaml.YAMLToJSON(raw)
	if err != nil {
		return nil, nil, err
	}
	u, err := decodeJSON(js)
	return js, u, err
}

// explainDecode rewords apimachinery's errors for objects without apiVersion or kind.
func explainDecode(err error) error {
	switch {
	case runtime.IsMissingKind(err):
		return errors.New("no kind: every manifest needs apiVersion and kind")
	case runtime.IsMissingVersion(err):
		return errors.New("no apiVersion: every manifest needs apiVersion and kind")
	}
	return err
}

func decodeJSON(js []byte) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		return nil, explainDecode(err)
	}
	if u.IsList() {
		return u, nil
	}
	switch {
	case u.GetAPIVersion() == "":
		return nil, fmt.Errorf("%s has no apiVersion: every manifest needs apiVersion and kind", u.GetKind())
	case u.GetName() == "":
		return nil, fmt.Errorf("%s has no metadata.name", u.GetKind())
	}
	return u, nil
}
