package source

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/gittest"
)

// noise is n bytes that do not compress: a pack holding them is about n bytes.
func noise(n int) string {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(r.IntN(26))
	}
	return string(b)
}

// diskUse adds up the sizes of the files under dir.
func diskUse(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFetchLimits commits a blob over a limit, outside the manifests path, and checks
// the repo over smart HTTP: the fetch is refused while it is received, with the commit,
// the sizes and the flag to change; the cache stays small; the refused head is not
// fetched again; the next commit without the blob is fetched.
func TestFetchLimits(t *testing.T) {
	tests := []struct {
		name   string
		blob   string
		limits func(*Options)
		want   string
	}{
		{"a pack over the fetch limit", noise(3 << 20), func(o *Options) { o.MaxFetchBytes = 1 << 20 },
			"was cut off after 1.1 MiB, more than the limit of 1 MiB per fetch: keep large files out of the repo (or in Git LFS), or raise --git-max-fetch-mib"},
		{"an object over the object limit", strings.Repeat("0", 3<<20), func(o *Options) { o.MaxObjectBytes = 1 << 20 },
			"holds an object of 3 MiB, more than the limit of 1 MiB per object: keep large files out of the repo (or in Git LFS), or raise --git-max-object-mib"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := gittest.NewServer(t)
			repo := srv.NewRepo(t, "shop/web")
			files := map[string]string{"assets/video.bin": tt.blob}
			for k, v := range manifests {
				files[k] = v
			}
			head := repo.Commit("main", "a big asset", files)
			opts := DefaultOptions()
			opts.CacheDir = t.TempDir()
			tt.limits(&opts)
			src := New(opts)
			cfg := repoConfig("shop/web", srv.RepoURL("shop/web"))
			ctx := context.Background()

			res, err := src.Check(ctx, cfg)
			var over *FetchLimitError
			if !errors.As(err, &over) {
				t.Fatalf("check: %v, want a *FetchLimitError", err)
			}
			if !strings.Contains(err.Error(), "the fetch of commit "+head[:12]+" "+tt.want) {
				t.Errorf("error:\n%v\nwant it to name commit %s and say:\n%s", err, head[:12], tt.want)
			}
			if res.Commit != head {
				t.Errorf("result's commit %q, want the refused head %s", res.Commit, head)
			}
			if n := diskUse(t, opts.CacheDir); n > 1<<20 {
				t.Errorf("the cache holds %d bytes after the refusal, want less than the 1 MiB limit", n)
			}

			srv.Requests()
			if _, err := src.Check(ctx, cfg); !errors.As(err, &over) {
				t.Errorf("second check: %v, want the refusal again", err)
			}
			for _, r := range srv.Requests() {
				if strings.HasPrefix(r, "POST") {
					t.Errorf("the refused head was fetched again: %s", r)
				}
			}

			fixed := repo.Commit("main", "the asset moved out", map[string]string{"assets/video.bin": ""})
			res, err = src.Check(ctx, cfg)
			if err != nil || res.Commit != fixed {
				t.Errorf("after the fix: %+v %v, want commit %s", res, err, fixed)
			}
		})
	}
}

func TestDeltaHeadTarget(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want int64
		ok   bool
	}{
		{"one-byte sizes", []byte{0x05, 0x10, 0x01}, 0x10, true},
		{"a 1 GiB target from a tiny base", []byte{0x01, 0x80, 0x80, 0x80, 0x80, 0x04}, 1 << 30, true},
		{"cut off", []byte{0x05, 0x80}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d deltaHead
			_, _ = d.Write(tt.b)
			got, ok := d.target()
			if got != tt.want || ok != tt.ok {
				t.Errorf("target() = %d, %v, want %d, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestPruneRemovesCachesOfReposThatLeft checks three repos, then prunes with one gone
// and one moved to another URL: their caches are removed, the kept repo's is not, nor
// a file or directory that is not a cache of deployd's.
func TestPruneRemovesCachesOfReposThatLeft(t *testing.T) {
	srv := gittest.NewServer(t)
	for _, name := range []string{"shop/web", "shop/gone", "shop/moved"} {
		srv.NewRepo(t, name).Commit("main", "one", manifests)
	}
	srv.NewRepo(t, "shop/moved-here").Commit("main", "one", manifests)
	src := newSource(t)
	ctx := context.Background()
	web, gone, moved := repoConfig("shop/web", srv.RepoURL("shop/web")), repoConfig("shop/gone", srv.RepoURL("shop/gone")), repoConfig("shop/moved", srv.RepoURL("shop/moved"))
	for _, r := range []config.Repo{web, gone, moved} {
		if _, err := src.Check(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	other := filepath.Join(src.opts.CacheDir, "not-a-cache@x-0123abcd")
	if err := os.MkdirAll(other, 0o700); err != nil {
		t.Fatal(err)
	}
	before := src.DiskUse()
	if before < 1000 {
		t.Errorf("disk use %d bytes with three caches", before)
	}
	movedNow := moved
	movedNow.URL = srv.RepoURL("shop/moved-here")
	removed, err := src.Prune([]config.Repo{web, movedNow})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{src.dir(gone), src.dir(moved)}, removed, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	for _, dir := range []string{src.dir(web), other} {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("%s was removed: %v", dir, err)
		}
	}
	if _, err := src.Check(ctx, movedNow); err != nil {
		t.Errorf("checking the moved repo afresh: %v", err)
	}
}

// TestCheckPackRefusesADeltaBomb packs, with git, a 10 MiB file made of a 1 MiB file
// of the commit before, repeated: git sends it as a small delta of the 1 MiB one, so the
// pack is small, but
// go-git would build the 10 MiB object in memory to index it. The check reads the size
// the delta makes from its header and refuses it before.
func TestCheckPackRefusesAGrownDelta(t *testing.T) {
	repo := gittest.NewRepo(t, t.TempDir(), "bomb")
	base := noise(3 << 20)
	repo.Commit("main", "base", map[string]string{"a.bin": base})
	repo.Commit("main", "grown", map[string]string{"a.bin": base + base[:2<<20]})
	// A thin pack of the second commit, as a fetch by a cache holding the first gets.
	cmd := exec.Command("sh", "-c", "printf 'main\n^main~1\n' | git pack-objects --revs --thin --stdout")
	cmd.Dir = repo.Bare
	pack, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if len(pack) > 1<<20 {
		t.Fatalf("the pack has %d bytes: git did not send the grown file as a delta", len(pack))
	}
	err = checkPack(bytes.NewReader(pack), 4<<20)
	var over *FetchLimitError
	if !errors.As(err, &over) || !over.Object || over.Size != 5<<20 {
		t.Fatalf("checkPack: %v, want the 5 MiB object refused", err)
	}
	if err := checkPack(bytes.NewReader(pack), 8<<20); err != nil {
		t.Errorf("checkPack under an 8 MiB limit: %v", err)
	}
}
