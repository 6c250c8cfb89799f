package source

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
