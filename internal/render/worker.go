package render

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"runtime/debug"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/openapi"
)

// workerEnv, set to workerEnvValue, makes a process that imports this package a render
// worker: it serves builds on its stdin and stdout, and exits before main (or a test)
// would start.
const (
	workerEnv      = "DEPLOYD_RENDER_WORKER"
	workerEnvValue = "render-v2" // v2: requests may carry a Helm chart
)

// exitConfine is a worker's exit code when it could not set up its sandbox.
const exitConfine = 4

// request is what the parent sends a worker on its stdin.
type request struct {
	Files  map[string][]byte
	Dir    string
	Limits Limits
	// Helm, when set, templates the chart in Dir instead of building a kustomization.
	Helm *helmRequest
}

// what names the request's work in messages.
func (r request) what() string {
	if r.Helm != nil {
		return "helm template"
	}
	return "kustomize build"
}

// thing names what the request renders, in advice.
func (r request) thing() string {
	if r.Helm != nil {
		return "chart"
	}
	return "kustomization"
}

// reply is one message of a worker's stdout: an object, or the end with its error.
type reply struct {
	// JSON is a rendered object.
	JSON []byte
	// Source is where it came from (a chart's template); empty for a kustomization.
	Source string
	// Done ends the build's replies; Err, if not nil, is why the build failed.
	Done bool
	Err  *Error
	// Chart, on the Done reply of a chart's build, is the chart rendered.
	Chart *Chart
	// Retire says the worker exits after this build: kustomize panicked, a limit was
	// passed, or the build changed kustomize's global state, which the next repo's
	// build must not see.
	Retire bool
}

// maxBuildsPerWorker retires a worker after this many builds, whatever they left behind.
const maxBuildsPerWorker = 100

func init() {
	if os.Getenv(workerEnv) == workerEnvValue {
		out, err := replyPipe()
		if err != nil {
			fmt.Fprintln(os.Stderr, "render worker:", err)
			os.Exit(exitConfine)
		}
		os.Exit(serveWorker(os.Stdin, out))
	}
}

// serveWorker warms kustomize up, then serves builds one at a time until its input ends
// or a build retires it. The first request confines the process for good. It returns the
// exit code: 0 when every reply was written, whatever the builds' outcomes.
func serveWorker(in io.Reader, out io.Writer) int {
	base, err := dataBytes() // the limit counts from here, warm-up included
	if err != nil {
		fmt.Fprintln(os.Stderr, "render worker:", err)
		return exitConfine
	}
	warmUp()
	dec, enc := gob.NewDecoder(in), gob.NewEncoder(out)
	for n := 1; ; n++ {
		var req request
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return 0
			}
			fmt.Fprintln(os.Stderr, "render worker: reading a request:", err)
			return 3
		}
		if n == 1 {
			if err := confine(base, req.Limits); err != nil {
				fmt.Fprintln(os.Stderr, "render worker:", err)
				return exitConfine
			}
		}
		if err := limitCPU(); err != nil {
			fmt.Fprintln(os.Stderr, "render worker:", err)
			return exitConfine
		}
		var objs []reply
		var rerr *Error
		var retire bool
		var chart *Chart
		if req.Helm != nil {
			objs, chart, rerr, retire = helmBuild(req)
		} else {
			var js [][]byte
			js, rerr, retire = build(req)
			for _, j := range js {
				objs = append(objs, reply{JSON: j})
			}
		}
		for _, r := range objs {
			if err := enc.Encode(r); err != nil {
				return 5
			}
		}
		retire = retire || n >= maxBuildsPerWorker || openapi.GetSchemaVersion() != defaultSchema
		if err := enc.Encode(reply{Done: true, Err: rerr, Chart: chart, Retire: retire}); err != nil {
			return 5
		}
		if retire {
			return 0
		}
	}
}

// defaultSchema is kustomize's built-in OpenAPI schema version, before any build.
var defaultSchema = openapi.GetSchemaVersion()

// warmUp builds a small kustomization while the worker waits as a spare, so that
// kustomize's lazy start (parsing its built-in OpenAPI schema) is not paid by the build
// it will serve. The schema is the built-in one, the same for every repo.
func warmUp() {
	_, _, _ = build(request{Dir: "warm-up", Limits: DefaultLimits(), Files: map[string][]byte{
		"warm-up/kustomization.yaml": []byte("resources: [d.yaml]\nnamePrefix: w-\npatches:\n- patch: |\n    {apiVersion: apps/v1, kind: Deployment, metadata: {name: d}, spec: {template: {spec: {containers: [{name: b, image: b}]}}}}\n"),
		"warm-up/d.yaml":             []byte("{apiVersion: apps/v1, kind: Deployment, metadata: {name: d}, spec: {template: {spec: {containers: [{name: a, image: a}]}}}}\n"),
	}})
}

// confine takes from the worker what a build must not have: memory over the limit,
// the network, other programs, and the parent's lead in the OOM killer's eyes.
func confine(base int64, lim Limits) error {
	// Nothing in a worker should reach the network; if a remote reference gets past
	// checkKustomization, kustomize's loader meets this transport (and seccomp's refusal
	// of socket(2) below it).
	http.DefaultTransport = refuseTransport{}
	http.DefaultClient = &http.Client{Transport: refuseTransport{}}
	os.Clearenv() // no PATH for git or helm, no proxy settings
	if err := sandbox(base + lim.MaxMemory); err != nil {
		return err
	}
	debug.SetMemoryLimit(lim.MaxMemory / 4 * 3) // collect harder before the hard limit
	return nil
}

// errNoNetwork is what a worker's HTTP transport answers every request with.
var errNoNetwork = errors.New("deployd renders without network: vendor remote files into the repo")

type refuseTransport struct{}

func (refuseTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return nil, fmt.Errorf("%s: %w", req.URL.Redacted(), errNoNetwork)
}

// build runs kustomize over an in-memory copy of the commit: the filesystem holds the
// commit's files and nothing else, and counts reads against the limits. retire says the
// worker should not serve another build: kustomize panicked or a limit was passed.
func build(req request) (objs [][]byte, rerr *Error, retire bool) {
	defer func() {
		if p := recover(); p != nil {
			objs, rerr, retire = nil, &Error{File: req.Dir, Msg: fmt.Sprintf("kustomize build failed (it panicked: %v)", p)}, true
		}
	}()
	mem := filesys.MakeFsInMemory()
	for name, content := range req.Files {
		if err := mem.WriteFile("/"+name, content); err != nil {
			return nil, &Error{File: name, Msg: "loading for kustomize: " + err.Error()}, false
		}
	}
	fs := &budgetFS{FileSystem: mem, lim: req.Limits, priced: map[string]bool{}}
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = types.LoadRestrictionsNone // overlays reach ../base, inside the repo
	opts.PluginConfig = types.DisabledPluginConfig()
	resMap, err := krusty.MakeKustomizer(opts).Run(fs, "/"+req.Dir)
	if fs.err != nil {
		return nil, fs.err, true
	}
	if err != nil {
		msg := strings.ReplaceAll(err.Error(), "'/", "'")
		if errors.Is(err, errNoNetwork) || strings.Contains(msg, errNoNetwork.Error()) {
			msg = "a remote reference is refused: " + msg
		}
		return nil, &Error{File: req.Dir, Msg: "kustomize build: " + msg}, false
	}
	if n := resMap.Size(); n > req.Limits.MaxObjects {
		return nil, tooManyObjects(req.Dir, req.Limits), true
	}
	b := &budget{lim: req.Limits, dir: req.Dir}
	for _, res := range resMap.Resources() {
		js, err := res.MarshalJSON()
		if err != nil {
			return nil, &Error{File: req.Dir, Msg: fmt.Sprintf("kustomize output %s: %v", res.CurId(), err)}, false
		}
		if b.add(len(js)) != nil {
			return nil, tooManyBytes(req.Dir, req.Limits), true // the count was checked above
		}
		objs = append(objs, js)
	}
	return objs, nil, false
}

// budgetFS is the worker's filesystem: it counts every read against MaxReads, and prices
// the aliases of each YAML file the first time it is read, before kustomize expands them.
type budgetFS struct {
	filesys.FileSystem
	lim    Limits
	mu     sync.Mutex
	reads  int
	priced map[string]bool
	err    *Error // the first limit passed; kustomize may wrap or drop the read's error
}

func (f *budgetFS) ReadFile(name string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if f.reads++; f.reads > f.lim.MaxReads {
		f.err = &Error{File: strings.TrimPrefix(name, "/"), Msg: fmt.Sprintf("kustomize read files more than %d times (bases that include one another twice double per level): include each base once", f.lim.MaxReads)}
		return nil, f.err
	}
	data, err := f.FileSystem.ReadFile(name)
	if err != nil || f.priced[name] {
		return data, err
	}
	f.priced[name] = true
	if e := priceAliases(strings.TrimPrefix(name, "/"), data, f.lim.MaxAliasNodes); e != nil {
		f.err = e
		return nil, e
	}
	return data, nil
}

// priceAliases refuses a YAML file whose aliases, expanded, add more than limit nodes.
func priceAliases(name string, data []byte, limit int) *Error {
	if !bytes.ContainsRune(data, '*') || !bytes.ContainsRune(data, '&') {
		return nil
	}
	switch strings.ToLower(path.Ext(name)) {
	case ".yaml", ".yml", ".json", "":
	default:
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	total := 0
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			return nil // kustomize reports syntax errors itself
		}
		if total += AliasNodes(&doc); total > limit {
			line := 1
			if len(doc.Content) > 0 {
				line = doc.Content[0].Line
			}
			return aliasError(name, line, limit).(*Error)
		}
	}
}
