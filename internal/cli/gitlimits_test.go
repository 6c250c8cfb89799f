package cli

import (
	"context"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/gittest"
	"github.com/deployd/deployd/internal/history"
)

// incompressible is n bytes a pack cannot shrink.
func incompressible(n int) string {
	r := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(r.IntN(26))
	}
	return string(b)
}

// dirSize adds up the sizes of the files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// TestGitLimitsThroughTheDaemon runs deployd with a 1 MiB fetch limit over a repo whose
// head commits a 3 MiB blob outside its manifests, next to a normal repo: the big
// commit is refused, recorded once with the limit and the flag, the cache stays small
// and its size is exported, the other repo keeps deploying, and once the big repo leaves
// repos.yaml its cache is removed.
func TestGitLimitsThroughTheDaemon(t *testing.T) {
	srv := gittest.NewServer(t)
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {v: '%s'}\n"
	big := srv.NewRepo(t, "shop/web")
	head := big.Commit("main", "a video", map[string]string{"deploy/manifests/cm.yaml": strings.Replace(cm, "%s", "1", 1), "assets/video.bin": incompressible(3 << 20)})
	other := srv.NewRepo(t, "shop/other")
	other.Commit("main", "one", map[string]string{"deploy/manifests/cm.yaml": strings.Replace(cm, "%s", "1", 1)})
	webNS, otherNS, stateNS := env.Namespace(t), env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	line := func(name, ns string) string {
		return "  - {name: " + name + ", url: '" + srv.RepoURL(name) + "', namespace: " + ns + ", interval: 1s}\n"
	}
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n"+line("shop/web", webNS)+line("shop/other", otherNS))
	cache := filepath.Join(dir, "cache")
	web, otherRepo := config.Repo{Name: "shop/web", Environment: "production"}, config.Repo{Name: "shop/other", Environment: "production"}
	base, logs, _ := startDaemon(t, "--config", cfg, "--kubeconfig", env.Kubeconfig, "--cache-dir", cache, "--namespace", stateNS,
		"--git-max-fetch-mib", "1", "--log-format", "json")

	recs := waitRecords(t, stateNS, web, "the big commit refused", func(r []history.Record) bool { return len(r) == 1 })
	want := "the fetch of commit " + head[:12] + " was cut off after"
	if r := recs[0]; r.Phase != history.Error || r.Commit.SHA != head || !strings.Contains(r.Error, want) ||
		!strings.Contains(r.Error, "more than the limit of 1 MiB per fetch: keep large files out of the repo (or in Git LFS), or raise --git-max-fetch-mib") {
		t.Errorf("record %+v\nwant an error saying %q", r, want)
	}
	if n := dirSize(cache); n > 1<<20 {
		t.Errorf("the cache holds %d bytes, want less than the 1 MiB limit", n)
	}

	t.Run("the other repo keeps deploying", func(t *testing.T) {
		next := other.Commit("main", "two", map[string]string{"deploy/manifests/cm.yaml": strings.Replace(cm, "%s", "2", 1)})
		waitRecords(t, stateNS, otherRepo, "the other repo's new commit", func(r []history.Record) bool {
			return len(r) > 0 && r[len(r)-1].Commit.SHA == next && r[len(r)-1].Phase == history.Succeeded
		})
		if recs := records(t, stateNS, web); len(recs) != 1 {
			t.Errorf("the refusal was recorded %d times, want once: %+v", len(recs), recs)
		}
	})
	t.Run("the cache's size is exported", func(t *testing.T) {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "\ndeployd_git_cache_bytes ") {
			t.Errorf("no deployd_git_cache_bytes in /metrics")
		}
	})
	t.Run("the cache of a repo that left the config is removed", func(t *testing.T) {
		caches := func(prefix string) int {
			entries, _ := os.ReadDir(cache)
			n := 0
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), prefix) {
					n++
				}
			}
			return n
		}
		if caches("shop_web@") != 1 {
			t.Fatalf("no cache of shop/web before the reload")
		}
		writeFile(t, dir, "repos.yaml", "repos:\n"+line("shop/other", otherNS))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
			return caches("shop_web@") == 0, nil
		})
		if err != nil {
			t.Fatalf("shop/web's cache is still there after the reload:\n%s", logs)
		}
		if caches("shop_other@") != 1 {
			t.Errorf("shop/other's cache was removed too")
		}
	})
}
