package source

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/deployd/deployd/internal/gittest"
)

// TestFetchRef fetches a pull request's head, a branch and a tag from the repo's URL;
// a ref that is none of those is refused before any request, and a head over the fetch
// limit is refused while it is received.
func TestFetchRef(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	repo.Commit("main", "one", manifests)
	pr := repo.Commit("feature", "two", map[string]string{"deploy/manifests/cm.yaml": "kind: ConfigMap\nmetadata: {name: two}\n"})
	repo.PullRequest(7, "feature")
	repo.Checkout("main")
	big := repo.Commit("big", "a big asset", map[string]string{"assets/video.bin": noise(3 << 20)})
	repo.PullRequest(8, "big")
	cfg := repoConfig("shop/web", srv.RepoURL("shop/web"))
	opts := DefaultOptions()
	opts.CacheDir = t.TempDir()
	opts.MaxFetchBytes = 1 << 20
	src := New(opts)
	ctx := context.Background()

	for _, ref := range []string{PullRef(7), "feature", "refs/heads/feature"} {
		rev, err := src.FetchRef(ctx, cfg, ref)
		if err != nil || rev.Commit != pr {
			t.Errorf("%s: %+v %v, want commit %s", ref, rev, err, pr)
		}
	}
	files, err := src.Files(cfg, pr, cfg.ManifestPath(), DefaultLimits())
	if err != nil || !strings.Contains(string(files["deploy/manifests/cm.yaml"]), "two") {
		t.Errorf("files of the pull request's head: %v %v", files, err)
	}

	srv.Requests()
	for _, ref := range []string{"refs/pull/7/../../heads/main", "refs/remotes/origin/main", "refs/pull/7/head/", "refs/heads/a b", "-upload-pack=evil"} {
		if _, err := src.FetchRef(ctx, cfg, ref); err == nil || !strings.Contains(err.Error(), "is not a branch, tag or pull request ref") {
			t.Errorf("%q: %v, want it refused", ref, err)
		}
	}
	if reqs := srv.Requests(); len(reqs) > 0 {
		t.Errorf("refused refs were asked for: %v", reqs)
	}

	var over *FetchLimitError
	if _, err := src.FetchRef(ctx, cfg, PullRef(8)); !errors.As(err, &over) {
		t.Errorf("a pull request over the fetch limit (%s): %v, want a *FetchLimitError", big[:12], err)
	}
	if _, err := src.FetchRef(ctx, cfg, PullRef(9)); err == nil || !strings.Contains(err.Error(), "refs/pull/9/head not found on the remote") {
		t.Errorf("a missing pull request: %v", err)
	}
}

// TestFetchRefKeepsFewPacks fetches one pull request after another, each a new pack: the
// cache is cloned afresh past maxPacks, so it never holds many more.
func TestFetchRefKeepsFewPacks(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	repo.Commit("main", "one", manifests)
	cfg := repoConfig("shop/web", srv.RepoURL("shop/web"))
	src := newSource(t)
	for n := 1; n <= 2*maxPacks; n++ {
		branch := "pr-" + strings.Repeat("x", n)
		head := repo.Commit(branch, branch, map[string]string{"deploy/manifests/cm.yaml": "kind: ConfigMap\nmetadata: {name: " + branch + "}\n"})
		repo.PullRequest(n, branch)
		rev, err := src.FetchRef(context.Background(), cfg, PullRef(n))
		if err != nil || rev.Commit != head {
			t.Fatalf("pull request %d: %+v %v", n, rev, err)
		}
		if got := packCount(src.dir(cfg)); got > maxPacks+1 {
			t.Fatalf("after pull request %d the cache holds %d packs, want at most %d", n, got, maxPacks+1)
		}
	}
}
