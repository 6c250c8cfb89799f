package source

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/gittest"
)

func TestPollReadsNothingOfAnUnmovedCache(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	first := repo.Commit("main", "first", manifests)
	src := newSource(t)
	cfg := repoConfig("shop/web", srv.RepoURL("shop/web"))
	ctx := context.Background()

	t.Run("before any check, a poll fetches", func(t *testing.T) {
		srv.Requests()
		res, err := src.Poll(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.Commit != first || !res.Fetched || res.Tree == "" {
			t.Errorf("first poll = %+v, want %s fetched with its tree", res, first)
		}
		if reqs := srv.Requests(); !hasFetch(reqs) {
			t.Errorf("first poll's requests %v: want a fetch", reqs)
		}
	})
	checked, err := src.Check(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}

	// Garbage in place of every pack index: a check would have to read them (and find
	// the cache broken); a poll of the unmoved branch does not.
	idxs, _ := filepath.Glob(filepath.Join(src.dir(cfg), "objects", "pack", "*.idx"))
	if len(idxs) == 0 {
		t.Fatal("no pack index in the cache")
	}
	for _, idx := range idxs {
		if err := os.WriteFile(idx, []byte("not an index"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("an unmoved branch is one ref advertisement, answered from memory", func(t *testing.T) {
		srv.Requests()
		res, err := src.Poll(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		reqs := srv.Requests()
		if len(reqs) != 1 || !strings.HasSuffix(reqs[0], "/info/refs?service=git-upload-pack") {
			t.Errorf("poll's requests %v, want one ref advertisement", reqs)
		}
		if res.Fetched || res.Revision.Commit != checked.Commit || res.Tree != checked.Tree || res.Message != "first" || res.Recloned != "" {
			t.Errorf("poll = %+v, want the checked revision %+v, not fetched", res, checked.Revision)
		}
	})
	t.Run("a moved branch is checked: fetched, and the broken cache cloned again", func(t *testing.T) {
		second := repo.Commit("main", "second", map[string]string{"deploy/manifests/cm.yaml": "kind: ConfigMap\ndata: {a: b}\n"})
		srv.Requests()
		res, err := src.Poll(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.Commit != second || !res.Fetched || res.Tree == checked.Tree || res.Recloned == "" {
			t.Errorf("poll after a push = %+v, want %s fetched, a new tree, and the cache cloned again", res, second)
		}
		if reqs := srv.Requests(); !hasFetch(reqs) {
			t.Errorf("requests %v: want a fetch", reqs)
		}
	})
	t.Run("a cache removed from under it is cloned again", func(t *testing.T) {
		if err := os.RemoveAll(src.dir(cfg)); err != nil {
			t.Fatal(err)
		}
		srv.Requests()
		res, err := src.Poll(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if reqs := srv.Requests(); !hasFetch(reqs) {
			t.Errorf("requests %v: want a fetch into a new cache", reqs)
		}
		if _, err := src.Files(cfg, res.Commit, cfg.ManifestPath(), DefaultLimits()); err != nil {
			t.Errorf("reading the polled commit's manifests: %v", err)
		}
	})
	t.Run("a branch gone from the remote is an error", func(t *testing.T) {
		gone := cfg
		gone.Branch = "nope"
		if _, err := src.Poll(ctx, gone); err == nil || !strings.Contains(err.Error(), `branch "nope" not found`) {
			t.Errorf("poll of a missing branch: %v", err)
		}
	})
}

// hasFetch reports whether reqs include an object fetch (git-upload-pack POST).
func hasFetch(reqs []string) bool {
	for _, r := range reqs {
		if strings.HasSuffix(r, "/git-upload-pack") {
			return true
		}
	}
	return false
}

// TestRefAdvertisementIsBounded: a repo that grew more refs than deployd reads fails its
// checks and polls with an error saying so, instead of being read whole; one under the
// bound is read as before.
func TestRefAdvertisementIsBounded(t *testing.T) {
	defer func(old int64) { maxAdvertisement = old }(maxAdvertisement)
	maxAdvertisement = 8 << 10
	srv := gittest.NewServer(t)
	small, big := srv.NewRepo(t, "shop/small"), srv.NewRepo(t, "shop/big")
	small.Commit("main", "first", manifests)
	sha := big.Commit("main", "first", manifests)
	src := newSource(t)
	ctx := context.Background()
	if _, err := src.Check(ctx, repoConfig("shop/small", srv.RepoURL("shop/small"))); err != nil {
		t.Fatalf("a repo under the bound: %v", err)
	}
	cfg := repoConfig("shop/big", srv.RepoURL("shop/big"))
	if _, err := src.Check(ctx, cfg); err != nil {
		t.Fatalf("before its refs grew: %v", err)
	}
	packs, _ := filepath.Glob(filepath.Join(src.dir(cfg), "objects", "pack", "*.pack"))
	// 400 tags, some 24 KB of advertisement, written straight into packed-refs.
	var refs strings.Builder
	for i := range 400 {
		fmt.Fprintf(&refs, "%s refs/tags/v0.0.%d\n", sha, i)
	}
	f, err := os.OpenFile(filepath.Join(big.Bare, "packed-refs"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(refs.String()); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for name, check := range map[string]func(context.Context, config.Repo) (Result, error){"check": src.Check, "poll": src.Poll} {
		_, err := check(ctx, cfg)
		t.Logf("%s: %v", name, err)
		if err == nil || !strings.Contains(err.Error(), "ref advertisement is over 8 KiB") || !strings.Contains(err.Error(), "shop/big") {
			t.Errorf("%s of a repo over the bound: %v; want the bound named, and the repo", name, err)
		}
	}
	if after, _ := filepath.Glob(filepath.Join(src.dir(cfg), "objects", "pack", "*.pack")); len(packs) == 0 || !slices.Equal(after, packs) {
		t.Errorf("packs %v before, %v after: the cache was thrown away for the remote's fault", packs, after)
	}
}
