package preview

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/deployd/deployd/internal/apply"
)

// Bounds on a diff: the fields listed per object and in all (what a stored preview may
// hold: at most MaxAllFields × 2 × MaxValue bytes of values), and the length of a value.
const (
	MaxFields    = 50
	MaxAllFields = 500
	MaxValue     = 200
	// MaxImages bounds the images listed.
	MaxImages = 100
)

// redacted replaces a Secret's values.
const redacted = "<redacted>"

// ChangedObject is one object a merge would add, change or prune.
type ChangedObject struct {
	// Object is "Kind/namespace/name" or "Kind/name".
	Object     string `json:"object" doc:"Kind/namespace/name, or Kind/name when cluster-scoped."`
	APIVersion string `json:"apiVersion" doc:"The object's apiVersion."`
	// Source is where the manifests define it ("file:line"); empty for pruned objects.
	Source string `json:"source,omitempty" doc:"Where the manifests define it (file:line)."`
	// Fields are the changed fields, at most MaxFields (fewer once the preview's
	// MaxAllFields are listed).
	Fields []FieldChange `json:"fields,omitempty" doc:"The fields that would change (at most 50; Secret values redacted)."`
	// MoreFields counts the changed fields left out past MaxFields.
	MoreFields int `json:"moreFields,omitempty" doc:"Changed fields left out: past 50 for an object, or 500 for the whole preview."`
	// Note says why an object is only listed (not dry-run, or kept instead of pruned).
	Note string `json:"note,omitempty" doc:"Why the object is only listed, when it is."`
}

// FieldChange is one field that would change, with its values as JSON (cut at MaxValue).
type FieldChange struct {
	Path string `json:"path" doc:"The field's path, e.g. spec.replicas or spec.template.spec.containers[name=web].image."`
	From string `json:"from,omitempty" doc:"The live value as JSON; empty when the field is added."`
	To   string `json:"to,omitempty" doc:"The value after the merge as JSON; empty when the field is removed."`
}

// ImageChange is a container whose image would change.
type ImageChange struct {
	Object    string `json:"object" doc:"The object holding the container."`
	Container string `json:"container" doc:"The container's name."`
	From      string `json:"from,omitempty" doc:"The live image; empty for a new container."`
	To        string `json:"to" doc:"The image after the merge."`
}

// Changes is what applying a set would do, compared with the live objects.
type Changes struct {
	Added     []ChangedObject `json:"added" nullable:"false" doc:"Objects that would be created."`
	Changed   []ChangedObject `json:"changed" nullable:"false" doc:"Objects that would change, with the fields."`
	Pruned    []ChangedObject `json:"pruned" nullable:"false" doc:"Objects deployd applied that would be deleted."`
	Kept      []ChangedObject `json:"kept,omitempty" doc:"Objects that left the manifests but would be kept, with why."`
	Unchanged int             `json:"unchanged" doc:"How many objects would stay as they are."`
	Images    []ImageChange   `json:"images" nullable:"false" doc:"Container images that would change (at most 100)."`
	// MoreImages counts the image changes left out past MaxImages.
	MoreImages int `json:"moreImages,omitempty" doc:"Image changes left out past the 100 listed."`
}

// noChanges is Changes with empty lists, as the API shows them (never null).
func noChanges() Changes {
	return Changes{Added: []ChangedObject{}, Changed: []ChangedObject{}, Pruned: []ChangedObject{}, Images: []ImageChange{}}
}

// Any reports whether anything would change.
func (c Changes) Any() bool { return len(c.Added)+len(c.Changed)+len(c.Pruned) > 0 }

// Compare tells what the dry run found: each object added, changed (field by field) or
// unchanged, the images that would change, and what would be pruned.
func Compare(dr apply.DryRunResult) Changes {
	c := noChanges()
	budget := MaxAllFields
	for _, p := range dr.Objects {
		o := ChangedObject{Object: p.Object.String(), APIVersion: apiVersion(p.Object), Source: p.Source}
		switch {
		case p.After == nil:
			o.Note = p.NotChecked
			c.Added = append(c.Added, o)
		case p.Live == nil:
			c.Added = append(c.Added, o)
			c.Images = append(c.Images, images(o.Object, nil, p.After)...)
		default:
			var fields []FieldChange
			fieldDiff(p.Live.Object, p.After.Object, "", secret(p.Live), &fields)
			if len(fields) == 0 {
				c.Unchanged++
				continue
			}
			keep := min(len(fields), MaxFields, budget)
			o.Fields, o.MoreFields = fields[:keep], len(fields)-keep
			budget -= keep
			c.Changed = append(c.Changed, o)
			c.Images = append(c.Images, images(o.Object, p.Live, p.After)...)
		}
	}
	if len(c.Images) > MaxImages {
		c.MoreImages, c.Images = len(c.Images)-MaxImages, c.Images[:MaxImages]
	}
	for _, r := range dr.Pruned {
		c.Pruned = append(c.Pruned, ChangedObject{Object: r.String(), APIVersion: apiVersion(r)})
	}
	for _, k := range dr.Kept {
		c.Kept = append(c.Kept, ChangedObject{Object: k.Object.String(), APIVersion: apiVersion(k.Object), Note: k.Reason})
	}
	return c
}

func apiVersion(r apply.Ref) string {
	if r.Group == "" {
		return r.Version
	}
	return r.Group + "/" + r.Version
}

func secret(u *unstructured.Unstructured) bool {
	return u.GetAPIVersion() == "v1" && u.GetKind() == "Secret"
}

// ignored are the fields an apply changes on every object, or that are not the
// manifests' to set: listing them would hide the changes that matter.
var ignored = map[string]bool{
	"status": true, ".status": true,
	".metadata.managedFields": true, ".metadata.resourceVersion": true, ".metadata.generation": true,
	".metadata.creationTimestamp": true, ".metadata.uid": true,
}

// fieldDiff lists the paths where before and after differ. Maps are walked by key, lists
// of equal length by index (or by name, for lists of named items), other lists whole.
func fieldDiff(before, after any, path string, hide bool, out *[]FieldChange) {
	if ignored[path] {
		return
	}
	if equality.Semantic.DeepEqual(before, after) {
		return
	}
	bm, bok := before.(map[string]any)
	am, aok := after.(map[string]any)
	if bok && aok {
		for _, k := range keys(bm, am) {
			fieldDiff(bm[k], am[k], child(path, k), hide, out)
		}
		return
	}
	bl, bok := before.([]any)
	al, aok := after.([]any)
	if bok && aok && len(bl) == len(al) {
		for i := range bl {
			fieldDiff(bl[i], al[i], path+"["+itemKey(bl[i], al[i], i)+"]", hide, out)
		}
		return
	}
	f := FieldChange{Path: strings.TrimPrefix(path, "."), From: value(before), To: value(after)}
	if hide && (under(f.Path, "data") || under(f.Path, "stringData") || strings.Contains(f.Path, "last-applied-configuration")) {
		f.From, f.To = hidden(before), hidden(after)
	}
	*out = append(*out, f)
}

func keys(a, b map[string]any) []string {
	var out []string
	for k := range a {
		out = append(out, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func child(path, key string) string {
	if strings.ContainsAny(key, ".[]") {
		return path + "[" + key + "]"
	}
	return path + "." + key
}

// itemKey is "name=x" for two items of the same name, else the index.
func itemKey(a, b any, i int) string {
	am, _ := a.(map[string]any)
	bm, _ := b.(map[string]any)
	if n, ok := am["name"].(string); ok && bm["name"] == n {
		return "name=" + n
	}
	return strconv.Itoa(i)
}

// value is v as compact JSON, cut at MaxValue; "" when absent.
func value(v any) string {
	if v == nil {
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > MaxValue {
		return string(b[:MaxValue]) + "…"
	}
	return string(b)
}

func hidden(v any) string {
	if v == nil {
		return ""
	}
	return redacted
}

// images lists the containers of after whose image differs from before's (a container
// before lacks, when it is nil or has none of that name).
func images(object string, before, after *unstructured.Unstructured) []ImageChange {
	was := map[string]string{}
	if before != nil {
		containers(before.Object, "", func(name, image string) { was[name] = image })
	}
	var out []ImageChange
	containers(after.Object, "", func(name, image string) {
		if was[name] != image {
			out = append(out, ImageChange{Object: object, Container: name, From: was[name], To: image})
		}
	})
	return out
}

// containers calls f with every container's name and image under v, in any pod
// template (custom resources included); names of init containers are prefixed "init:".
func containers(v any, prefix string, f func(name, image string)) {
	switch v := v.(type) {
	case map[string]any:
		for _, k := range keys(v, nil) {
			child := v[k]
			if k == "containers" || k == "initContainers" {
				p := prefix
				if k == "initContainers" {
					p = "init:"
				}
				list, _ := child.([]any)
				for _, c := range list {
					m, _ := c.(map[string]any)
					name, _ := m["name"].(string)
					image, _ := m["image"].(string)
					if name != "" {
						f(p+name, image)
					}
				}
				continue
			}
			containers(child, prefix, f)
		}
	case []any:
		for _, c := range v {
			containers(c, prefix, f)
		}
	}
}
