package deploy

import (
	"context"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/source"
)

// hostileFiles reads a hostile repo of internal/render's testdata as a commit's files,
// its directory m as the repo's manifest path deploy, with RECORDER replaced by host.
func hostileFiles(t *testing.T, name, host string) map[string]string {
	t.Helper()
	root := filepath.Join("..", "render", "testdata", "hostile", name)
	files := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if after, ok := strings.CutPrefix(rel, "m/"); ok {
			rel = "deploy/" + after
		}
		files[rel] = strings.ReplaceAll(string(b), "RECORDER", host)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestHostileReposAreRefusedWhileOthersDeploy: repos pushed to the local git server with
// hostile manifests each end in an error record naming the reason, fetch nothing, and
// leave deployd's memory bounded, while a normal repo deployed by the same runner succeeds.
func TestHostileReposAreRefusedWhileOthersDeploy(t *testing.T) {
	var requests atomic.Int64
	recorder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		w.Write([]byte("secret: from the metadata server\n"))
	}))
	defer recorder.Close()
	host := strings.TrimPrefix(recorder.URL, "http://")
	git := gittest.NewServer(t)
	opts := source.DefaultOptions()
	opts.CacheDir = t.TempDir()
	src := source.New(opts)
	f := newFixture(t, src)
	ctx := context.Background()

	deploy := func(t *testing.T, name string, files map[string]string) (config.Repo, error) {
		t.Helper()
		git.NewRepo(t, name).Commit("main", "push", files)
		repo := f.repo
		repo.Name, repo.Namespace, repo.URL, repo.Branch = "shop/"+name, env.Namespace(t), git.RepoURL(name), "main"
		res, err := src.Check(ctx, repo)
		if err != nil {
			t.Fatal(err)
		}
		return repo, f.runner.Deploy(ctx, controller.Deployment{Repo: repo, Revision: res.Revision, Trigger: controller.TriggerPoll})
	}
	tests := []struct{ repo, want string }{
		{"ssrf-configmap-generator-files", `rendering deploy: deploy/kustomization.yaml:5: remote reference "http://` + host + `/latest/meta-data/iam/security-credentials" is refused`},
		{"ssrf-resources-capitalised", `rendering deploy: deploy/kustomization.yaml:4: remote reference "http://` + host + `/resource.yaml" is refused`},
		{"ssrf-openapi-path", "rendering deploy: deploy/kustomization.yaml:2: the openapi field is refused"},
		{"billion-laughs-kustomize", "rendering deploy: deploy/lol.yaml:1: YAML aliases expand to more than 100000 nodes"},
		{"diamond", "kustomize read files more than 10000 times"},
		{"tiny-documents", "rendering deploy: deploy: renders to more than the limit of 1000 objects per repo"},
	}
	for i, tt := range tests {
		t.Run(tt.repo, func(t *testing.T) {
			repo, err := deploy(t, "bad"+strconv.Itoa(i), hostileFiles(t, tt.repo, host))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
			recs, _ := f.store.List(ctx, repo)
			if len(recs) != 1 || recs[0].Phase != history.Error || !strings.Contains(recs[0].Error, tt.want) {
				t.Errorf("records %+v, want an error record naming %q", recs, tt.want)
			}
		})
	}
	good, err := deploy(t, "good", map[string]string{"deploy/kustomization.yaml": "resources: [web.yaml]\nnamePrefix: shop-\n", "deploy/web.yaml": workload("web", 1, false, 60)})
	if err != nil {
		t.Fatal(err)
	}
	if e := f.waitEvent(t, 1, history.Succeeded); e.Repo.Name != good.Name {
		t.Errorf("%s succeeded, want only %s to", e.Repo.Name, good.Name)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("the recording server got %d requests, want none", n)
	}
	if hwm := peakRSS(t); hwm > 512<<20 {
		t.Errorf("this process's peak RSS was %d MiB, over the pod's 512 Mi", hwm>>20)
	}
}

// peakRSS is this process's peak resident memory (VmHWM).
func peakRSS(t *testing.T) int64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}
