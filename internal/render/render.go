// Package render turns the manifests at a commit into Kubernetes objects: plain YAML
// and JSON files, or a kustomization built in memory. Errors name the file and line.
package render

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

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

// Render renders the manifests in dir of files (repo path → content).
func Render(files map[string][]byte, dir string) ([]Object, error) {
	dir = path.Clean(dir)
	if IsKustomization(files, dir) {
		return kustomize(files, dir)
	}
	return plain(files, dir)
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
func plain(files map[string][]byte, dir string) ([]Object, error) {
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
	var objs []Object
	var errs []error
	for _, name := range names {
		got, err := decodeFile(name, files[name])
		objs = append(objs, got...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return objs, errors.Join(errs...)
}

// decodeFile reads every document of a YAML (or JSON) file; kind: List is flattened.
func decodeFile(name string, data []byte) ([]Object, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var objs []Object
	for {
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
		u, err := toUnstructured(&doc)
		if err != nil {
			return objs, &Error{File: name, Line: line, Msg: err.Error()}
		}
		src := fmt.Sprintf("%s:%d", name, line)
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				return objs, &Error{File: name, Line: line, Msg: "kind List: " + err.Error()}
			}
			for i := range list.Items {
				objs = append(objs, Object{Unstructured: &list.Items[i], Source: src})
			}
			continue
		}
		objs = append(objs, Object{Unstructured: u, Source: src})
	}
}

func toUnstructured(doc *yaml.Node) (*unstructured.Unstructured, error) {
	if doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("a manifest must be a mapping (apiVersion, kind, metadata, ...)")
	}
	raw, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	js, err := sigsyaml.YAMLToJSON(raw)
	if err != nil {
		return nil, err
	}
	return decodeJSON(js)
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
