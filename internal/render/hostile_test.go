package render

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"
)

// hostileRepo reads testdata/hostile/<name> as a commit's files, with "RECORDER" in
// their content replaced by host.
func hostileRepo(t testing.TB, name, host string) map[string][]byte {
	t.Helper()
	root := filepath.Join("testdata", "hostile", name)
	files := map[string][]byte{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		files[filepath.ToSlash(rel)] = []byte(strings.ReplaceAll(string(b), "RECORDER", host))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// recorder is a loopback HTTP server that counts the requests it gets; a silent one
// never answers (until the test ends).
type recorder struct {
	*httptest.Server
	requests atomic.Int64
}

func newRecorder(t testing.TB, silent bool) *recorder {
	r := &recorder{}
	done := make(chan struct{})
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.requests.Add(1)
		if silent {
			select {
			case <-done:
			case <-req.Context().Done():
			}
			return
		}
		w.Write([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fetched}\n"))
	}))
	t.Cleanup(func() { close(done); r.Close() })
	return r
}

func (r *recorder) host() string { return strings.TrimPrefix(r.URL, "http://") }

// TestKustomizeNeverReachesTheNetwork: every field through which kustomize fetched over
// HTTP (or would run git) is refused with its file and line, and neither a recording
// server nor a silent one gets a request. Without the up-front check, the worker's
// sandbox refuses them too, and a silent server cannot hold the build.
func TestKustomizeNeverReachesTheNetwork(t *testing.T) {
	tests := []struct {
		repo, want string
	}{
		{"ssrf-resources-capitalised", `m/kustomization.yaml:4: remote reference "http://RECORDER/resource.yaml" is refused`},
		{"ssrf-patch-path", `m/kustomization.yaml:3: remote reference "http://RECORDER/patch.yaml" is refused`},
		{"ssrf-patches-strategic-merge", `m/kustomization.yaml:3: remote reference "http://RECORDER/smp.yaml" is refused`},
		{"ssrf-patches-json6902", `m/kustomization.yaml:4: remote reference "http://RECORDER/json6902.yaml" is refused`},
		{"ssrf-configmap-generator-files", `m/kustomization.yaml:5: remote reference "http://RECORDER/latest/meta-data/iam/security-credentials" is refused`},
		{"ssrf-secret-generator-keyed-file", `m/kustomization.yaml:4: remote reference "token=http://RECORDER/token" is refused`},
		{"ssrf-generator-envs", `m/kustomization.yaml:4: remote reference "http://RECORDER/env" is refused`},
		{"ssrf-openapi-path", `m/kustomization.yaml:2: the openapi field is refused`},
		{"ssrf-components", `m/kustomization.yaml:3: remote reference "http://RECORDER/component" is refused`},
		{"ssrf-git-base", `m/kustomization.yaml:3: remote reference "http://RECORDER/org/repo.git//deploy?ref=main" is refused`},
		{"ssrf-replacements-path", `m/kustomization.yaml:3: remote reference "http://RECORDER/replacement.yaml" is refused`},
		{"ssrf-configurations", `m/kustomization.yaml:3: remote reference "http://RECORDER/config.yaml" is refused`},
	}
	for _, tt := range tests {
		t.Run(tt.repo, func(t *testing.T) {
			for _, silent := range []bool{false, true} {
				srv := newRecorder(t, silent)
				files := hostileRepo(t, tt.repo, srv.host())
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				_, err := Render(ctx, files, "m", DefaultLimits())
				want := strings.ReplaceAll(tt.want, "RECORDER", srv.host())
				if err == nil || !strings.HasPrefix(err.Error(), want) {
					t.Errorf("error %v, want it to start with %q", err, want)
				}
				// The worker alone, as if a reference got past the check.
				_, err = workers.build(ctx, request{Files: files, Dir: "m", Limits: DefaultLimits()})
				if err == nil || ctx.Err() != nil {
					t.Errorf("the worker alone: error %v (context: %v), want a refusal before the deadline", err, ctx.Err())
				}
				if n := srv.requests.Load(); n != 0 {
					t.Errorf("the server (silent: %v) got %d requests, want none", silent, n)
				}
			}
		})
	}
}

// TestOpenAPIStateIsNotShared: a kustomization with openapi is refused up front, and even
// when one is built (in the worker alone), the next repo's build does not see its schema.
func TestOpenAPIStateIsNotShared(t *testing.T) {
	ctx := context.Background()
	polluter := hostileRepo(t, "openapi-pollution", "")
	_, err := Render(ctx, polluter, "polluter", DefaultLimits())
	if want := "polluter/kustomization.yaml:3: the openapi field is refused"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %v, want it to start with %q", err, want)
	}
	if _, err := workers.build(ctx, request{Files: polluter, Dir: "polluter", Limits: DefaultLimits()}); err != nil {
		t.Fatalf("building the polluter in a worker: %v", err)
	}
	objs, err := Render(ctx, polluter, "victim", DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	var containers []string
	spec := objs[0].Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	for _, c := range spec["containers"].([]any) {
		containers = append(containers, c.(map[string]any)["name"].(string))
	}
	if diff := cmp.Diff([]string{"sidecar", "web"}, containers); diff != "" {
		t.Errorf("the victim's containers after a strategic merge patch (-want +got):\n%s", diff)
	}
}

// TestHostileInputStaysBounded: each input is refused with its reason while memory
// stays bounded: the worker's peak RSS for kustomize, bytes allocated for plain files.
func TestHostileInputStaysBounded(t *testing.T) {
	tests := []struct {
		name, repo, dir, want string
		// maxMiB bounds the worker's peak RSS (kustomize) or the bytes allocated (plain).
		maxMiB int64
	}{
		{"billion laughs through kustomize", "billion-laughs-kustomize", "m", "m/lol.yaml:1: YAML aliases expand to more than 100000 nodes (excessive aliasing)", 100},
		{"billion laughs in the kustomization", "billion-laughs-in-kustomization", "m", "m/kustomization.yaml:1: YAML aliases expand to more than 100000 nodes (excessive aliasing)", 32},
		{"a diamond of bases doubling per level", "diamond", "m", "kustomize read files more than 10000 times", 200},
		{"1,001 tiny documents", "tiny-documents", "m", "m: renders to more than the limit of 1000 objects per repo", 32},
		{"40 KB of [", "syntax-error-brackets", "m", "m/brackets.yaml: YAML syntax error: exceeded max depth", 32},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := hostileRepo(t, tt.repo, "")
			var err error
			allocated := allocatedBy(func() { _, err = Render(context.Background(), files, tt.dir, DefaultLimits()) })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to contain %q", err, tt.want)
			}
			used, what := allocated, "allocated"
			if IsKustomization(files, tt.dir) && !strings.Contains(tt.want, "kustomization.yaml") {
				used, what = lastPeakRSS.Load(), "the worker's peak RSS"
			}
			t.Logf("%s: %d MiB", what, used>>20)
			if used>>20 > tt.maxMiB*memoryFactor {
				t.Errorf("%s: %d MiB, want at most %d", what, used>>20, tt.maxMiB*memoryFactor)
			}
		})
	}
}

// TestManyTinyDocumentsStopEarly: 9 MiB of tiny documents (152k objects) are refused at
// the 1,001st, without decoding the rest.
func TestManyTinyDocumentsStopEarly(t *testing.T) {
	var b strings.Builder
	for b.Len() < 9<<20 {
		b.WriteString("---\n{apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n")
	}
	files := map[string][]byte{"m/many.yaml": []byte(b.String())}
	var err error
	allocated := allocatedBy(func() { _, err = Render(context.Background(), files, "m", DefaultLimits()) })
	if err == nil || !strings.Contains(err.Error(), "more than the limit of 1000 objects") {
		t.Errorf("error %v", err)
	}
	if allocated > 32<<20 {
		t.Errorf("allocated %d MiB, want at most 32", allocated>>20)
	}
}

// TestLimitsAreOneStepOverTheLine: at a limit the render succeeds; one over, it fails.
func TestLimitsAreOneStepOverTheLine(t *testing.T) {
	doc := "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
	kust := func(files map[string][]byte) map[string][]byte {
		files["m/kustomization.yaml"] = []byte("resources: [a.yaml]\n")
		return files
	}
	lim := DefaultLimits()
	lim.MaxObjects = 3
	tests := []struct {
		name    string
		files   map[string][]byte
		wantErr bool
	}{
		{"plain, at the object limit", map[string][]byte{"m/a.yaml": []byte(strings.Repeat(doc, 3))}, false},
		{"plain, one object over", map[string][]byte{"m/a.yaml": []byte(strings.Repeat(doc, 4))}, true},
		{"kustomize, at the object limit", kust(map[string][]byte{"m/a.yaml": []byte(strings.Repeat(doc, 3))}), false},
		{"kustomize, one object over", kust(map[string][]byte{"m/a.yaml": []byte(strings.Repeat(doc, 4))}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// kustomize refuses duplicate ids: name each document apart.
			for name, content := range tt.files {
				if strings.HasSuffix(name, "a.yaml") {
					tt.files[name] = numbered(content)
				}
			}
			_, err := Render(context.Background(), tt.files, "m", lim)
			if gotErr := err != nil; gotErr != tt.wantErr || (err != nil && !strings.Contains(err.Error(), "more than the limit of 3 objects")) {
				t.Errorf("error %v, want an error: %v", err, tt.wantErr)
			}
		})
	}
}

func numbered(content []byte) []byte {
	parts := strings.Split(string(content), "name: c}")
	var b strings.Builder
	for i, p := range parts[:len(parts)-1] {
		b.WriteString(p + "name: c" + string(rune('a'+i)) + "}")
	}
	b.WriteString(parts[len(parts)-1])
	return []byte(b.String())
}

// TestKustomizeMemoryLimit: a build over the worker's memory limit ends the worker, not
// deployd, and says which limit it passed.
func TestKustomizeMemoryLimit(t *testing.T) {
	var b strings.Builder // 1,000 ConfigMaps of 40 keys: 640 KB, a build of 90 MiB
	for i := range 1000 {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c%d}\ndata:\n", i)
		for j := range 40 {
			fmt.Fprintf(&b, "  key%d: value\n", j)
		}
	}
	files := map[string][]byte{"m/kustomization.yaml": []byte("resources: [big.yaml]\n"), "m/big.yaml": []byte(b.String())}
	lim := DefaultLimits()
	lim.MaxMemory = 32 << 20 * memoryFactor
	_, err := Render(context.Background(), files, "m", lim)
	if want := fmt.Sprintf("m: kustomize build used more than the memory limit of %d MiB", 32*memoryFactor); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %v, want it to start with %q", err, want)
	}
	if peak := lastPeakRSS.Load(); peak > 100<<20*memoryFactor {
		t.Errorf("the worker's peak RSS was %d MiB", peak>>20)
	}
	if _, err := Render(context.Background(), files, "m", DefaultLimits()); err != nil {
		t.Errorf("with the default limit: %v", err)
	}
}

// TestKustomizeStopsWithItsContext: a cancelled render ends its worker and says why.
func TestKustomizeStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("superseded by a newer commit"))
	_, err := Render(ctx, kustomizeRepo, "deploy/overlays/dev", DefaultLimits())
	if err == nil || !strings.Contains(err.Error(), "superseded by a newer commit") {
		t.Errorf("error %v", err)
	}
}

func allocatedBy(f func()) int64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return int64(after.TotalAlloc - before.TotalAlloc)
}

// TestDeadIdleWorkerIsNotBlamed: a worker killed while it waited (the OOM killer prefers
// workers) does not fail the next build.
func TestDeadIdleWorkerIsNotBlamed(t *testing.T) {
	ctx := context.Background()
	if _, err := Render(ctx, kustomizeRepo, "deploy/overlays/prod", DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	workers.mu.Lock()
	for _, w := range workers.idle {
		w.cmd.Process.Kill()
	}
	killed := len(workers.idle)
	workers.mu.Unlock()
	if killed == 0 {
		t.Fatal("no idle worker after a build")
	}
	if _, err := Render(ctx, kustomizeRepo, "deploy/overlays/prod", DefaultLimits()); err != nil {
		t.Errorf("the build after an idle worker died: %v", err)
	}
}

// TestByteLimitIsOneStepOverTheLine: rendered objects may add up to MaxBytes of JSON.
func TestByteLimitIsOneStepOverTheLine(t *testing.T) {
	doc := "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {k: v}\n"
	one, err := Render(context.Background(), map[string][]byte{"m/a.yaml": []byte(doc)}, "m", DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	js, err := one[0].MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	lim := DefaultLimits()
	lim.MaxBytes = int64(2 * len(js))
	for _, kustomized := range []bool{false, true} {
		for n, wantErr := range map[int]bool{2: false, 3: true} {
			files := map[string][]byte{"m/a.yaml": numbered([]byte(strings.Repeat(doc, n)))}
			if kustomized {
				files["m/kustomization.yaml"] = []byte("resources: [a.yaml]\n")
			}
			_, err := Render(context.Background(), files, "m", lim)
			if gotErr := err != nil; gotErr != wantErr || (err != nil && !strings.Contains(err.Error(), fmt.Sprintf("more than the limit of %d bytes of objects", lim.MaxBytes))) {
				t.Errorf("kustomize %v, %d objects of %d bytes, limit %d: error %v, want an error: %v", kustomized, n, len(js), lim.MaxBytes, err, wantErr)
			}
		}
	}
}

// TestReadAndAliasLimitsAreOneStepOverTheLine: a build that needs exactly MaxReads reads,
// and a file whose aliases add exactly MaxAliasNodes nodes, pass; one fewer fails.
func TestReadAndAliasLimitsAreOneStepOverTheLine(t *testing.T) {
	t.Run("reads", func(t *testing.T) {
		req := request{Files: kustomizeRepo, Dir: "deploy/overlays/dev", Limits: DefaultLimits()}
		need := 0
		for req.Limits.MaxReads = 1; req.Limits.MaxReads < 100; req.Limits.MaxReads++ {
			if _, err, _ := build(req); err == nil {
				need = req.Limits.MaxReads
				break
			}
		}
		if need == 0 {
			t.Fatal("the overlay did not build within 100 reads")
		}
		req.Limits.MaxReads = need - 1
		if _, err, retire := build(req); err == nil || !retire || !strings.Contains(err.Error(), fmt.Sprintf("kustomize read files more than %d times", need-1)) {
			t.Errorf("with %d reads, one fewer than the build needs: error %v, retire %v", need-1, err, retire)
		}
		req.Limits.MaxReads = need
		if _, err := Render(context.Background(), req.Files, req.Dir, req.Limits); err != nil {
			t.Errorf("in a worker, with the %d reads it needs: %v", need, err)
		}
	})
	t.Run("aliases", func(t *testing.T) {
		doc := "apiVersion: v1\nkind: List\nitems:\n- &a {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- *a\n- *a\n"
		var node yaml.Node
		if err := yaml.Unmarshal([]byte(doc), &node); err != nil {
			t.Fatal(err)
		}
		added := AliasNodes(&node)
		if added != 2*8 { // each alias stands for the 9 nodes of the object, in place of 1
			t.Fatalf("AliasNodes = %d, want 16", added)
		}
		lim := DefaultLimits()
		lim.MaxAliasNodes = added
		files := map[string][]byte{"m/a.yaml": []byte(doc)}
		if _, err := Render(context.Background(), files, "m", lim); err != nil {
			t.Errorf("at the limit: %v", err)
		}
		lim.MaxAliasNodes = added - 1
		if _, err := Render(context.Background(), files, "m", lim); err == nil || !strings.Contains(err.Error(), "m/a.yaml:1: YAML aliases expand to more than 15 nodes") {
			t.Errorf("one over the limit: error %v", err)
		}
	})
}

// TestPlainStopsWithItsContext: a plain render whose context ends stops before the next
// document, with an *Error naming the file and the cause.
func TestPlainStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("superseded by a newer commit"))
	_, err := Render(ctx, hostileRepo(t, "tiny-documents", ""), "m", DefaultLimits())
	var re *Error
	if !errors.As(err, &re) || err.Error() != "m/many.yaml: rendering stopped: superseded by a newer commit" {
		t.Errorf("error %v", err)
	}
}
