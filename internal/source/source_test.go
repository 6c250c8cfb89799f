package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

func TestServerFaults(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "a/app")
	repo.Commit("main", "one", manifests)
	opts := DefaultOptions()
	opts.CacheDir = t.TempDir()
	opts.Timeout = 500 * time.Millisecond
	src := New(opts)
	cfg := repoConfig("a/app", srv.RepoURL("a/app"))

	srv.SetMode("down")
	if _, err := src.Check(context.Background(), cfg); err == nil {
		t.Error("check against a down server succeeded")
	}
	srv.SetMode("hang")
	start := time.Now()
	_, err := src.Check(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("hanging server: %v, want a timeout", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a hanging server held the check for %v, the timeout is %v", took, opts.Timeout)
	}
	srv.SetMode("")
	if _, err := src.Check(context.Background(), cfg); err != nil {
		t.Errorf("after recovery: %v", err)
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
