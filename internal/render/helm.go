package render

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	v2util "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/engine"
	"helm.sh/helm/v4/pkg/ignore"
)

// helmRequest is a chart's release and values, sent to a worker with the commit's files.
type helmRequest struct {
	Environment, Namespace, ReleaseName string
	Values                              []string
	// SetJSON is Options.Set as JSON (gob cannot send a map of any).
	SetJSON      []byte
	Capabilities *Capabilities
}

// maxChartDepth bounds how deep file:// dependencies may nest.
const maxChartDepth = 10

// IsChart reports whether dir holds a Helm chart (a Chart.yaml).
func IsChart(files map[string][]byte, dir string) bool {
	_, ok := files[path.Join(path.Clean(dir), "Chart.yaml")]
	return ok
}

// helm templates the chart in dir in a worker process, as `helm template` would, with
// the release and values of opts.
func helm(ctx context.Context, files map[string][]byte, dir string, opts Options) (Result, error) {
	res := Result{Renderer: RendererHelm}
	if opts.ReleaseName == "" {
		opts.ReleaseName = path.Base(dir)
	}
	set, err := json.Marshal(opts.Set)
	if err != nil {
		return res, &Error{File: dir, Msg: "set values: " + err.Error()}
	}
	hr := &helmRequest{Environment: opts.Environment, Namespace: opts.Namespace, ReleaseName: opts.ReleaseName,
		Values: opts.Values, SetJSON: set, Capabilities: opts.Capabilities}
	out, err := workers.build(ctx, request{Files: files, Dir: dir, Limits: opts.Limits, Helm: hr})
	res.Objects, res.Chart = out.objects, out.chart
	return res, err
}

// helmBuild templates the chart of req in the worker; objs are the objects' replies, in
// the order of the templates' names. retire says the worker should not serve another build.
func helmBuild(req request) (objs []reply, info *Chart, rerr *Error, retire bool) {
	defer func() {
		if p := recover(); p != nil {
			objs, info, rerr, retire = nil, nil, &Error{File: req.Dir, Msg: fmt.Sprintf("helm template failed (it panicked: %v)", p)}, true
		}
	}()
	h := &helmBuilder{req: req, hr: req.Helm, paths: map[string]string{}}
	ch, err := h.load(req.Dir, 0)
	if err != nil {
		return nil, nil, err, false
	}
	info = &Chart{Name: ch.Name(), Version: ch.Metadata.Version, AppVersion: ch.Metadata.AppVersion}
	rendered, err := h.render(ch)
	if err != nil {
		return nil, info, err, false
	}
	objs, oerr := h.objects(ch, rendered)
	var over *budgetError
	switch {
	case errors.As(oerr, &over):
		return nil, info, asError(req.Dir, over.err), true
	case oerr != nil:
		return nil, info, asError(req.Dir, oerr), false
	}
	return objs, info, nil, false
}

// asError is err as an *Error, located in dir when it is not one.
func asError(dir string, err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{File: dir, Msg: err.Error()}
}

// helmBuilder templates one chart.
type helmBuilder struct {
	req request
	hr  *helmRequest
	// paths maps a chart's path in the rendered template names (chart/charts/sub) to its
	// directory in the repo, for errors.
	paths map[string]string
	// loaded counts the charts loaded, file:// dependencies included.
	loaded int
}

// load reads the chart in dir from the commit's files, and its file:// dependencies
// from the directories they name; any other dependency must be vendored in charts/.
func (h *helmBuilder) load(dir string, depth int) (*chart.Chart, *Error) {
	chartFile := path.Join(dir, "Chart.yaml")
	if h.loaded++; depth > maxChartDepth || h.loaded > 100 {
		return nil, &Error{File: chartFile, Msg: fmt.Sprintf("file:// dependencies nest deeper than %d charts or load more than 100: simplify the chart", maxChartDepth)}
	}
	rules, e := helmIgnore(h.req.Files, dir)
	if e != nil {
		return nil, e
	}
	var bufs []*archive.BufferedFile
	for name, data := range h.req.Files {
		rel, ok := strings.CutPrefix(name, dir+"/")
		if dir == "." {
			rel, ok = name, true
		}
		if ok && !ignored(rules, rel) {
			bufs = append(bufs, &archive.BufferedFile{Name: rel, Data: data})
		}
	}
	sort.Slice(bufs, func(i, j int) bool { return bufs[i].Name < bufs[j].Name })
	if e := h.checkYAML(dir, bufs); e != nil {
		return nil, e
	}
	ch, err := loader.LoadFiles(bufs)
	if err != nil {
		return nil, &Error{File: chartFile, Msg: "loading the chart: " + err.Error()}
	}
	if err := ch.Validate(); err != nil {
		return nil, &Error{File: chartFile, Msg: "the chart is not valid: " + err.Error()}
	}
	return ch, h.dependencies(ch, dir, depth)
}

// helmIgnore reads the chart's .helmignore, with Helm's defaults, as `helm template`
// does for a chart directory.
func helmIgnore(files map[string][]byte, dir string) (*ignore.Rules, *Error) {
	rules := ignore.Empty()
	name := path.Join(dir, ignore.HelmIgnore)
	if data, ok := files[name]; ok {
		r, err := ignore.Parse(bytes.NewReader(data))
		if err != nil {
			return nil, &Error{File: name, Msg: err.Error()}
		}
		rules = r
	}
	rules.AddDefaults()
	return rules, nil
}

// ignored reports whether rules leave out the chart's file rel, or a directory above it.
func ignored(rules *ignore.Rules, rel string) bool {
	parts := strings.Split(rel, "/")
	for i := 1; i < len(parts); i++ {
		if rules.Ignore(strings.Join(parts[:i], "/"), fileInfo{name: parts[i-1], dir: true}) {
			return true
		}
	}
	return rules.Ignore(rel, fileInfo{name: parts[len(parts)-1]})
}

// fileInfo is what ignore.Rules asks of a file: its name and whether it is a directory.
type fileInfo struct {
	name string
	dir  bool
}

func (f fileInfo) Name() string       { return f.name }
func (f fileInfo) Size() int64        { return 0 }
func (f fileInfo) ModTime() time.Time { return time.Time{} }
func (f fileInfo) IsDir() bool        { return f.dir }
func (f fileInfo) Sys() any           { return nil }
func (f fileInfo) Mode() fs.FileMode {
	if f.dir {
		return fs.ModeDir | 0o755
	}
	return 0o644
}

// checkYAML prices the aliases of the chart's YAML files before Helm's loader expands them.
func (h *helmBuilder) checkYAML(dir string, bufs []*archive.BufferedFile) *Error {
	for _, f := range bufs {
		if strings.HasPrefix(f.Name, "templates/") {
			continue // templates are priced once rendered
		}
		if e := priceAliases(path.Join(dir, f.Name), f.Data, h.req.Limits.MaxAliasNodes); e != nil {
			return e
		}
	}
	return nil
}

// dependencies adds ch's file:// dependencies that are not vendored, and refuses those
// that would need the network.
func (h *helmBuilder) dependencies(ch *chart.Chart, dir string, depth int) *Error {
	have := map[string]bool{}
	for _, d := range ch.Dependencies() {
		have[d.Name()] = true
	}
	for _, dep := range ch.Metadata.Dependencies {
		if have[dep.Name] {
			continue
		}
		chartFile := path.Join(dir, "Chart.yaml")
		line := h.lineOf(chartFile, dep.Name)
		local, ok := strings.CutPrefix(dep.Repository, "file://")
		if !ok {
			return &Error{File: chartFile, Line: line, Msg: fmt.Sprintf("dependency %q (repository %q) is not vendored in charts/: deployd renders without network; run \"helm dependency build\" and commit charts/", dep.Name, dep.Repository)}
		}
		sub := path.Join(dir, local)
		if path.IsAbs(local) || sub == ".." || strings.HasPrefix(sub, "../") {
			return &Error{File: chartFile, Line: line, Msg: fmt.Sprintf("dependency %q: %s is outside the repo: deployd renders only what the commit holds", dep.Name, dep.Repository)}
		}
		if !IsChart(h.req.Files, sub) {
			return &Error{File: chartFile, Line: line, Msg: fmt.Sprintf("dependency %q: no Chart.yaml in %s: commit the chart there, or run \"helm dependency build\" and commit charts/", dep.Name, sub)}
		}
		sc, err := h.load(sub, depth+1)
		if err != nil {
			return err
		}
		h.paths[path.Join(ch.ChartFullPath(), "charts", sc.Name())] = sub
		ch.AddDependency(sc)
	}
	return nil
}

// lineOf is the line of the first scalar value in a file of the commit; 0 if not found.
func (h *helmBuilder) lineOf(file, value string) int {
	var doc yaml.Node
	if err := yaml.Unmarshal(h.req.Files[file], &doc); err != nil {
		return 0
	}
	return valueLine(&doc, value)
}

// values are the user's values, merged in order: values-{environment}.yaml beside
// Chart.yaml, the request's files, then its set values. The chart's values.yaml comes
// under all of them when Helm coalesces.
func (h *helmBuilder) values() (map[string]any, *Error) {
	var names []string
	if env := h.hr.Environment; env != "" {
		if name := path.Join(h.req.Dir, "values-"+env+".yaml"); h.req.Files[name] != nil {
			names = append(names, name)
		}
	}
	for _, v := range h.hr.Values {
		name := path.Clean(strings.ReplaceAll(v, "{environment}", h.hr.Environment))
		if _, ok := h.req.Files[name]; !ok {
			return nil, &Error{File: name, Msg: fmt.Sprintf("values file not in the commit (repos.yaml values: %q): commit it or remove it from values", v)}
		}
		names = append(names, name)
	}
	vals := map[string]any{}
	for _, name := range names {
		data := h.req.Files[name]
		var doc yaml.Node
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, &Error{File: name, Msg: "YAML syntax error: " + err.Error()}
		}
		if e := priceAliases(name, data, h.req.Limits.MaxAliasNodes); e != nil {
			return nil, e
		}
		v, err := loader.LoadValues(bytes.NewReader(data))
		if err != nil {
			return nil, &Error{File: name, Msg: "reading values: " + err.Error()}
		}
		vals = loader.MergeMaps(vals, v)
	}
	set := map[string]any{}
	if err := json.Unmarshal(h.hr.SetJSON, &set); err != nil {
		return nil, &Error{File: h.req.Dir, Msg: "set values: " + err.Error()}
	}
	return loader.MergeMaps(vals, set), nil
}

// render runs Helm's template engine over ch, without a cluster: lookup returns nothing
// and getHostByName an empty string.
func (h *helmBuilder) render(ch *chart.Chart) (map[string]string, *Error) {
	chartFile := path.Join(h.req.Dir, "Chart.yaml")
	vals, e := h.values()
	if e != nil {
		return nil, e
	}
	caps, err := h.capabilities()
	if err != nil {
		return nil, &Error{File: h.req.Dir, Msg: "cluster capabilities: " + err.Error()}
	}
	if kv := ch.Metadata.KubeVersion; kv != "" && !v2util.IsCompatibleRange(kv, caps.KubeVersion.String()) {
		return nil, &Error{File: chartFile, Line: h.lineOf(chartFile, kv), Msg: fmt.Sprintf("the chart needs Kubernetes %s, and the cluster runs %s", kv, caps.KubeVersion.String())}
	}
	if err := v2util.ProcessDependencies(ch, vals); err != nil {
		return nil, &Error{File: chartFile, Msg: "dependencies: " + err.Error()}
	}
	name := h.hr.ReleaseName
	top, err := chartutil.ToRenderValues(ch, vals, common.ReleaseOptions{Name: name, Namespace: h.hr.Namespace, Revision: 1, IsInstall: true}, caps)
	if err != nil {
		return nil, &Error{File: path.Join(h.req.Dir, "values.yaml"), Msg: err.Error()}
	}
	out, err := engine.Engine{}.RenderWithContext(context.Background(), ch, top)
	if err != nil {
		return nil, h.templateError(err)
	}
	return out, nil
}

// capabilities are the request's, over Helm's defaults.
func (h *helmBuilder) capabilities() (*common.Capabilities, error) {
	caps := common.DefaultCapabilities.Copy()
	c := h.hr.Capabilities
	if c == nil {
		return caps, nil
	}
	if c.KubeVersion != "" {
		kv, err := common.ParseKubeVersion(c.KubeVersion)
		if err != nil {
			return nil, err
		}
		caps.KubeVersion = *kv
	}
	if len(c.APIVersions) > 0 {
		caps.APIVersions = append(common.VersionSet{}, c.APIVersions...)
	}
	return caps, nil
}

// templateLocation finds a template's name and line in Helm's errors:
// "template: app/templates/x.yaml:12:3: executing ...", "parse error at (app/templates/x.yaml:5): ...".
var templateLocation = regexp.MustCompile(`([^\s():"<>]+/templates/[^\s():"<>]+):(\d+)(?::\d+)?`)

// templateError is a Helm engine error located in the repo: the template's file and line.
func (h *helmBuilder) templateError(err error) *Error {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	m := templateLocation.FindStringSubmatch(msg)
	if m == nil {
		return &Error{File: h.req.Dir, Msg: "helm template: " + msg}
	}
	line, _ := strconv.Atoi(m[2])
	// What is left after the location is the message; Helm repeats the location.
	rest := strings.ReplaceAll(msg, m[0], "")
	rest = strings.NewReplacer("execution error at ()", "", "parse error at ()", "", "template: :", "").Replace(rest)
	rest = strings.Trim(strings.Join(strings.Fields(rest), " "), " :")
	return &Error{File: h.repoPath(m[1]), Line: line, Msg: "helm template: " + rest}
}

// repoPath is the repo path of a rendered template's name (chart/templates/x.yaml or
// chart/charts/sub/templates/x.yaml).
func (h *helmBuilder) repoPath(name string) string {
	best := ""
	for prefix := range h.paths {
		if strings.HasPrefix(name, prefix+"/") && len(prefix) > len(best) {
			best = prefix
		}
	}
	if best != "" {
		return path.Join(h.paths[best], strings.TrimPrefix(name, best+"/"))
	}
	_, rest, _ := strings.Cut(name, "/")
	return path.Join(h.req.Dir, rest)
}

// testHooks are the hooks of `helm test`, which deployd skips.
var testHooks = map[string]bool{"test": true, "test-success": true, "test-failure": true}

// objects decodes the rendered templates (and the charts' crds/) into objects, counted
// against the limits as they are decoded. Objects of test hooks are skipped; other
// hooks are refused.
func (h *helmBuilder) objects(ch *chart.Chart, rendered map[string]string) ([]reply, error) {
	b := &budget{lim: h.req.Limits, dir: h.req.Dir}
	var out []reply
	add := func(name string, data []byte) error {
		objs, err := decodeFile(context.Background(), name, data, b)
		if err != nil {
			if e, ok := err.(*Error); ok {
				e.Msg = "in the rendered template: " + e.Msg
			}
			return err
		}
		for _, o := range objs {
			if e := hookOf(o, name); e != nil {
				return e
			}
			if isTestHook(o) {
				continue
			}
			keep(o)
			js, err := o.MarshalJSON()
			if err != nil {
				return &Error{File: name, Msg: err.Error()}
			}
			out = append(out, reply{JSON: js, Source: o.Source})
		}
		return nil
	}
	for _, crd := range allCRDs(ch) {
		if err := add(h.repoPath(crd.Filename), crd.File.Data); err != nil {
			return nil, err
		}
	}
	names := make([]string, 0, len(rendered))
	for name := range rendered {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") || strings.TrimSpace(rendered[name]) == "" {
			continue
		}
		if err := add(h.repoPath(name), []byte(rendered[name])); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// keep marks an object Helm would keep when its release no longer has it
// (helm.sh/resource-policy: keep) as one deployd does not prune.
func keep(o Object) {
	a := o.GetAnnotations()
	if a["helm.sh/resource-policy"] != "keep" || a["deployd.dev/prune"] != "" {
		return
	}
	a["deployd.dev/prune"] = "disabled"
	o.SetAnnotations(a)
}

// allCRDs are the files in the crds/ directories of ch and its dependencies.
func allCRDs(ch *chart.Chart) []chart.CRD {
	return ch.CRDObjects()
}

// isTestHook reports whether o is a `helm test` hook, which deployd skips.
func isTestHook(o Object) bool {
	hooks := o.GetAnnotations()["helm.sh/hook"]
	if hooks == "" {
		return false
	}
	for _, hk := range strings.Split(hooks, ",") {
		if !testHooks[strings.TrimSpace(hk)] {
			return false
		}
	}
	return true
}

// hookOf refuses an object annotated as a Helm hook other than a test: deployd applies
// a chart's objects as one set, and a hook applied as an ordinary object would run at
// the wrong time, every time.
func hookOf(o Object, file string) *Error {
	hooks := o.GetAnnotations()["helm.sh/hook"]
	if hooks == "" || isTestHook(o) {
		return nil
	}
	return &Error{File: file, Msg: fmt.Sprintf("%s is a Helm hook (helm.sh/hook: %s): deployd does not run hooks; remove the annotation to apply it with the chart's other objects, or make the job part of the app", o, hooks)}
}
