package source

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/gittest"
)

func repoConfig(name, url string) config.Repo {
	return config.Repo{
		Name: name, URL: url, Namespace: "ns", Environment: "dev",
		Settings: config.Settings{Branch: "main", Path: "deploy/manifests", Interval: time.Minute, Timeout: time.Minute, Prune: true},
	}
}

func newSource(t *testing.T) *Source {
	opts := DefaultOptions()
	opts.CacheDir = t.TempDir()
	opts.Timeout = 10 * time.Second
	return New(opts)
}

var manifests = map[string]string{"deploy/manifests/cm.yaml": "kind: ConfigMap\n", "README.md": "hello\n"}

func TestCheckOverSmartHTTP(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	first := repo.Commit("main", "first release\n\nbody", manifests)
	src := newSource(t)
	cfg := repoConfig("shop/web", srv.RepoURL("shop/web"))
	ctx := context.Background()

	res, err := src.Check(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Commit != first || !res.Fetched || res.Message != "first release" || res.Author != "Test Author" || res.Tree == "" {
		t.Errorf("first check = %+v", res)
	}

	t.Run("an unchanged remote costs one ref advertisement", func(t *testing.T) {
		srv.Requests()
		again, err := src.Check(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		reqs := srv.Requests()
		if again.Fetched || again.Commit != first || len(reqs) != 1 || !strings.HasSuffix(reqs[0], "/info/refs?service=git-upload-pack") {
			t.Errorf("second check fetched=%v, requests %v; want no fetch and one advertisement", again.Fetched, reqs)
		}
	})
	t.Run("a README-only commit keeps the manifests tree", func(t *testing.T) {
		sha := repo.Commit("main", "docs", map[string]string{"README.md": "more docs\n"})
		got, err := src.Check(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got.Commit != sha || !got.Fetched || got.Tree != res.Tree {
			t.Errorf("after README change: commit %s fetched=%v tree %s, want %s, true, unchanged %s", got.Commit, got.Fetched, got.Tree, sha, res.Tree)
		}
	})
	t.Run("a manifest change changes the tree", func(t *testing.T) {
		repo.Commit("main", "change", map[string]string{"deploy/manifests/cm.yaml": "kind: ConfigMap\ndata: {a: b}\n"})
		got, err := src.Check(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got.Tree == res.Tree {
			t.Error("tree unchanged after a manifest change")
		}
	})
	t.Run("a force-push is followed", func(t *testing.T) {
		sha := repo.ForcePush("main", "rewritten", map[string]string{"deploy/manifests/x.yaml": "kind: Secret\n"})
		got, err := src.Check(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got.Commit != sha || got.Message != "rewritten" {
			t.Errorf("after force-push got %s %q, want %s", got.Commit, got.Message, sha)
		}
	})
}

func TestCheckOverFile(t *testing.T) {
	repo := gittest.NewRepo(t, t.TempDir(), "app")
	sha := repo.Commit("main", "one", manifests)
	src := newSource(t)
	res, err := src.Check(context.Background(), repoConfig("a/app", repo.FileURL()))
	if err != nil {
		t.Fatal(err)
	}
	if res.Commit != sha {
		t.Errorf("commit %s, want %s", res.Commit, sha)
	}
	sha2 := repo.Commit("release", "on another branch", map[string]string{"deploy/manifests/b.yaml": "kind: Service\n"})
	cfg := repoConfig("a/app", repo.FileURL())
	cfg.Branch = "release"
	if res, err = src.Check(context.Background(), cfg); err != nil || res.Commit != sha2 {
		t.Errorf("release branch: %+v, %v", res, err)
	}
}

func TestCheckErrors(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "a/app")
	repo.Commit("main", "one", manifests)
	src := newSource(t)
	ctx := context.Background()
	cases := []struct {
		name string
		cfg  func(config.Repo) config.Repo
		want string
	}{
		{"missing branch", func(r config.Repo) config.Repo { r.Branch = "nope"; return r }, `branch "nope" not found on the remote`},
		{"missing manifests path", func(r config.Repo) config.Repo { r.Path = "k8s"; return r }, `has no directory "k8s": create it, or set path in repos.yaml`},
		{"missing repo", func(r config.Repo) config.Repo { r.URL = srv.RepoURL("a/nope"); return r }, "repository not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := src.Check(ctx, tc.cfg(repoConfig("a/app", srv.RepoURL("a/app"))))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestTokenAuth(t *testing.T) {
	srv := gittest.NewServer(t)
	srv.Token = "s3cret-token"
	repo := srv.NewRepo(t, "a/private")
	srv.Token = ""
	sha := repo.Commit("main", "one", manifests)
	srv.Token = "s3cret-token"
	src := newSource(t)
	cfg := repoConfig("a/private", srv.RepoURL("a/private"))

	_, err := src.Check(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "authentication required") {
		t.Errorf("anonymous check: %v, want authentication required", err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("wrong\n"), 0o600)
	cfg.Auth.TokenFile = tokenFile
	_, err = src.Check(context.Background(), cfg)
	if err == nil || strings.Contains(err.Error(), "wrong") {
		t.Errorf("wrong token: %v; want an error that does not print the token", err)
	}
	// The file is re-read on each check: rotating the Secret needs no restart.
	os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600)
	res, err := src.Check(context.Background(), cfg)
	if err != nil || res.Commit != sha {
		t.Errorf("with the token: %+v, %v", res, err)
	}
}

// TestServerFaults checks against a git server that is stopped, fails, or hangs: each
// check fails within the timeout saying why, and once the server is back the commit
// pushed meanwhile is fetched into the same cache.
func TestServerFaults(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "a/app")
	repo.Commit("main", "one", manifests)
	opts := DefaultOptions()
	opts.CacheDir = t.TempDir()
	opts.Timeout = 500 * time.Millisecond
	src := New(opts)
	cfg := repoConfig("a/app", srv.RepoURL("a/app"))
	if _, err := src.Check(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name           string
		want           string
		inject, repair func()
	}{
		{"a stopped server refuses the connection", "connection refused", srv.Stop, func() { srv.Start(t) }},
		{"a server answering 500", "the server answered 500 Internal Server Error", func() { srv.SetMode("error") }, func() { srv.SetMode("") }},
		{"a server answering 503", "the server answered 503 Service Unavailable", func() { srv.SetMode("down") }, func() { srv.SetMode("") }},
		{"a hanging server times out", "timed out", func() { srv.SetMode("hang") }, func() { srv.SetMode("") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sha := repo.Commit("main", tc.name, map[string]string{"deploy/manifests/cm.yaml": "kind: ConfigMap\ndata: {case: '" + tc.name + "'}\n"})
			tc.inject()
			start := time.Now()
			_, err := src.Check(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "a/app: fetching main from "+cfg.URL+": ") {
				t.Errorf("check: %v, want an error naming the repo, the URL and %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "cache") {
				t.Errorf("check: %v; the cache is not at fault", err)
			}
			t.Logf("check error: %v", err)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("the check took %v, the timeout is %v", took, opts.Timeout)
			}
			tc.repair()
			res, err := src.Check(context.Background(), cfg)
			if err != nil || res.Commit != sha || res.Recloned != "" {
				t.Errorf("after recovery: %+v, %v; want %s fetched into the same cache", res, err, sha)
			}
		})
	}
}

func TestCorruptCacheIsRecloned(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "a/app")
	sha := repo.Commit("main", "one", manifests)
	src := newSource(t)
	cfg := repoConfig("a/app", srv.RepoURL("a/app"))
	if _, err := src.Check(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	// A disk that filled up mid-write leaves a cache whose config git cannot read.
	if err := os.WriteFile(filepath.Join(src.dir(cfg), "config"), []byte("[remote \"origin\"\n\x00\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := src.Check(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Recloned == "" || res.Commit != sha {
		t.Errorf("result %+v: want a reclone with its reason", res)
	}
	var ce *cacheError
	if errors.As(err, &ce) {
		t.Error("cache error leaked to the caller")
	}
}

func TestFilesLimits(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "a/app")
	sha := repo.Commit("main", "one", map[string]string{
		"deploy/manifests/a.yaml":       "kind: ConfigMap\n",
		"deploy/manifests/sub/b.yaml":   "kind: Secret\n",
		"deploy/manifests/c.json":       `{"kind":"Service"}`,
		"deploy/manifests/big/logo.svg": strings.Repeat("x", 2048),
		"README.md":                     "hello\n",
	})
	src := newSource(t)
	cfg := repoConfig("a/app", srv.RepoURL("a/app"))
	if _, err := src.Check(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	small := Limits{MaxFileBytes: 1024, MaxTotalBytes: 1 << 20, MaxFiles: 10}

	t.Run("reads the files under the path, skipping those over MaxFileBytes", func(t *testing.T) {
		files, err := src.Files(cfg, sha, "deploy/manifests", small)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"deploy/manifests/a.yaml": "kind: ConfigMap\n", "deploy/manifests/sub/b.yaml": "kind: Secret\n", "deploy/manifests/c.json": `{"kind":"Service"}`}
		got := map[string]string{}
		for k, v := range files {
			got[k] = string(v)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("files (-want +got):\n%s", diff)
		}
	})
	cases := []struct {
		name  string
		dir   string
		lim   func(Limits) Limits
		want  string
		files int
	}{
		{"more files than MaxFiles", "deploy/manifests", func(l Limits) Limits { l.MaxFiles = 2; return l },
			"a/app: deploy/manifests has 3 files, more than the limit of 2: keep only manifests there, or set path in repos.yaml to a directory that holds only manifests", 3},
		{"more bytes than MaxTotalBytes", "deploy/manifests", func(l Limits) Limits { l.MaxTotalBytes = 20; return l },
			"a/app: the files in deploy/manifests add up to 47 bytes, more than the limit of 20 bytes: keep only manifests there, or set path in repos.yaml to a directory that holds only manifests", 3},
		{"the whole repo counts every file", ".", func(l Limits) Limits { l.MaxFileBytes = 1 << 20; l.MaxFiles = 4; return l },
			`a/app: the repo has 5 files, more than the limit of 4: deployd reads the whole repo when path is "." or holds a kustomization: keep fewer files in the repo, or the manifests in a repo of their own`, 5},
		{"a size just over the limit is rounded up", "deploy/manifests", func(l Limits) Limits { l.MaxFileBytes, l.MaxTotalBytes = 1<<20, 2<<10; return l },
			"a/app: the files in deploy/manifests add up to 2.1 KiB, more than the limit of 2 KiB: keep only manifests there, or set path in repos.yaml to a directory that holds only manifests", 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			files, err := src.Files(cfg, sha, tc.dir, tc.lim(small))
			var lim *LimitError
			if !errors.As(err, &lim) || files != nil {
				t.Fatalf("Files = %d files, %v; want a *LimitError", len(files), err)
			}
			if err.Error() != tc.want || lim.Files != tc.files {
				t.Errorf("error %q counting %d files\nwant  %q counting %d", err, lim.Files, tc.want, tc.files)
			}
		})
	}
}

// commitSymlinks commits symlinks (path → target) and regular files to repo's main
// branch with go-git, as gittest writes regular files only, and returns the commit.
func commitSymlinks(t *testing.T, repo *gittest.Repo, links, files map[string]string) string {
	t.Helper()
	work := t.TempDir()
	r, err := git.PlainClone(work, false, &git.CloneOptions{URL: repo.Bare})
	if err != nil {
		t.Fatal(err)
	}
	wt, err := r.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	for path, target := range links {
		os.MkdirAll(filepath.Dir(filepath.Join(work, path)), 0o755)
		if err := os.Symlink(target, filepath.Join(work, path)); err != nil {
			t.Fatal(err)
		}
		if _, err := wt.Add(path); err != nil {
			t.Fatal(err)
		}
	}
	for path, content := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(work, path)), 0o755)
		if err := os.WriteFile(filepath.Join(work, path), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := wt.Add(path); err != nil {
			t.Fatal(err)
		}
	}
	sig := &object.Signature{Name: "Test Author", Email: "author@example.com", When: time.Now()}
	sha, err := wt.Commit("symlinks", &git.CommitOptions{Author: sig})
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.CommitObject(sha)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := c.Tree()
	if err != nil {
		t.Fatal(err)
	}
	for path := range links {
		if e, err := tree.FindEntry(path); err != nil || e.Mode != filemode.Symlink {
			t.Fatalf("%s committed as %v, %v; want a symlink", path, e, err)
		}
	}
	if err := r.Push(&git.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	return sha.String()
}

func TestSymlinksAreNeverFollowed(t *testing.T) {
	repo := gittest.NewRepo(t, t.TempDir(), "app")
	repo.Commit("main", "one", map[string]string{"README.md": "hello\n"})
	secret := filepath.Join(t.TempDir(), "secret.yaml")
	if err := os.WriteFile(secret, []byte("kind: Secret\nstolen: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sha := commitSymlinks(t, repo, map[string]string{
		"deploy/manifests/passwd.yaml": "/etc/passwd",
		"deploy/manifests/secret.yaml": secret,
		"deploy/manifests/etc":         "/etc",
		"deploy/manifests/up.yaml":     "../../../../../../../../../etc/hostname",
		"deploy/outside":               filepath.Dir(secret),
	}, map[string]string{"deploy/manifests/ok.yaml": "kind: ConfigMap\n"})
	src := newSource(t)
	cfg := repoConfig("a/app", repo.FileURL())
	if _, err := src.Check(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}

	t.Run("symlinks under the manifests path are left out", func(t *testing.T) {
		for _, dir := range []string{"deploy/manifests", "."} {
			files, err := src.Files(cfg, sha, dir, DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			for name, content := range files {
				if strings.Contains(string(content), "stolen") || strings.Contains(string(content), "root:") ||
					strings.HasPrefix(name, "deploy/manifests/") && name != "deploy/manifests/ok.yaml" {
					t.Errorf("Files(%q) read %s: %q", dir, name, content)
				}
			}
			if string(files["deploy/manifests/ok.yaml"]) != "kind: ConfigMap\n" {
				t.Errorf("Files(%q) = %v, want the regular file ok.yaml", dir, files)
			}
		}
	})
	t.Run("a manifests path that is a symlink is not a directory", func(t *testing.T) {
		linked := cfg
		linked.Path = "deploy/outside"
		_, err := src.Check(context.Background(), linked)
		if err == nil || !strings.Contains(err.Error(), `has no directory "deploy/outside"`) {
			t.Errorf("check of a symlinked path: %v, want that it has no such directory", err)
		}
		files, err := src.Files(linked, sha, "deploy/outside", DefaultLimits())
		if err != nil || len(files) != 0 {
			t.Errorf("Files of a symlinked path = %v, %v; want nothing", files, err)
		}
	})
}

// TestPacksAreBounded pushes and checks many times: each fetch adds a pack (whose index
// go-git holds in memory), and past maxPacks the cache is cloned afresh at the next
// check, still answering the right head and files.
func TestPacksAreBounded(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	repo.Commit("main", "first", manifests)
	src := newSource(t)
	cfg := repoConfig("shop/web", srv.RepoURL("shop/web"))
	ctx := context.Background()
	dir := src.dir(cfg)
	most := 0
	for i := range 3 * maxPacks {
		value := fmt.Sprintf("kind: ConfigMap\ndata: {n: \"%d\"}\n", i)
		sha := repo.Commit("main", fmt.Sprintf("push %d", i), map[string]string{"deploy/manifests/cm.yaml": value})
		res, err := src.Check(ctx, cfg)
		if err != nil {
			t.Fatalf("check %d: %v", i, err)
		}
		if res.Commit != sha {
			t.Fatalf("check %d answered %s, want %s", i, res.Commit, sha)
		}
		files, err := src.Files(cfg, sha, "deploy/manifests", DefaultLimits())
		if err != nil || string(files["deploy/manifests/cm.yaml"]) != value {
			t.Fatalf("files at push %d: %q %v", i, files, err)
		}
		most = max(most, packCount(dir))
	}
	if most > maxPacks+1 {
		t.Errorf("the cache reached %d packs, want at most %d", most, maxPacks+1)
	}
	if most <= maxPacks/2 {
		t.Errorf("the cache never held more than %d packs: the test does not exercise the bound", most)
	}
}
