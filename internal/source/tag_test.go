package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/deployd/deployd/internal/gittest"
)

func testTag(name, commit, msg string) Tag {
	return Tag{Name: name, Commit: commit, Message: msg,
		Tagger: object.Signature{Name: "deployd", Email: "deployd@localhost", When: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}}
}

func TestPushTag(t *testing.T) {
	srv := gittest.NewServer(t)
	srv.Token = "push-token"
	repo := srv.NewRepo(t, "shop/web")
	first := repo.Commit("main", "first", manifests)
	second := repo.Commit("main", "second", map[string]string{"deploy/manifests/cm.yaml": "kind: ConfigMap\n# 2\n"})
	src := newSource(t)
	cfg := repoConfig("shop/web", srv.RepoURL("shop/web"))
	cfg.Auth.TokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(cfg.Auth.TokenFile, []byte("push-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("pushes an annotated tag on the commit, with its message", func(t *testing.T) {
		if err := src.PushTag(ctx, cfg, testTag("production/deployment-0001", first, "Successfully Deployed\n\nphase: succeeded\n")); err != nil {
			t.Fatal(err)
		}
		if got := repo.Git("cat-file", "-t", "refs/tags/production/deployment-0001"); got != "tag" {
			t.Errorf("the tag is a %s, want an annotated tag", got)
		}
		if got := repo.Git("rev-parse", "refs/tags/production/deployment-0001^{commit}"); got != first {
			t.Errorf("the tag points at %s, want %s", got, first)
		}
		body := repo.Git("cat-file", "-p", "refs/tags/production/deployment-0001")
		if !strings.Contains(body, "tagger deployd <deployd@localhost>") || !strings.Contains(body, "Successfully Deployed\n\nphase: succeeded") {
			t.Errorf("tag object:\n%s", body)
		}
	})
	t.Run("the same tag again is success", func(t *testing.T) {
		if err := src.PushTag(ctx, cfg, testTag("production/deployment-0001", first, "Successfully Deployed\n\nphase: succeeded\n")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a tag already on the same commit with another message is success", func(t *testing.T) {
		if err := src.PushTag(ctx, cfg, testTag("production/deployment-0001", first, "Successfully Deployed\n\nanother link\n")); err != nil {
			t.Fatal(err)
		}
		if body := repo.Git("cat-file", "-p", "refs/tags/production/deployment-0001"); strings.Contains(body, "another link") {
			t.Errorf("the tag was replaced:\n%s", body)
		}
	})
	t.Run("a tag of the same name on another commit is a conflict, not moved", func(t *testing.T) {
		err := src.PushTag(ctx, cfg, testTag("production/deployment-0001", second, "Failed Deployment\n"))
		var conflict *TagConflictError
		if !errors.As(err, &conflict) || conflict.Existing != first {
			t.Fatalf("err = %v, want a TagConflictError naming %s", err, first[:12])
		}
		if got := repo.Git("rev-parse", "refs/tags/production/deployment-0001^{commit}"); got != first {
			t.Errorf("the tag moved to %s", got)
		}
	})
	t.Run("a push the server's hook refuses fails, and passes once it accepts", func(t *testing.T) {
		repo.RejectPushes(true)
		err := src.PushTag(ctx, cfg, testTag("deployment-0002", second, "Failed Deployment\n"))
		if err == nil || !strings.Contains(err.Error(), "the server refused it") || !strings.Contains(err.Error(), "deployment-0002") {
			t.Fatalf("err = %v, want the refusal", err)
		}
		if refs := repo.Git("for-each-ref", "refs/tags/deployment-0002"); refs != "" {
			t.Fatalf("the refused tag is there: %s", refs)
		}
		repo.RejectPushes(false)
		if err := src.PushTag(ctx, cfg, testTag("deployment-0002", second, "Failed Deployment\n")); err != nil {
			t.Fatal(err)
		}
		if got := repo.Git("rev-parse", "refs/tags/deployment-0002^{commit}"); got != second {
			t.Errorf("the tag points at %s, want %s", got, second)
		}
	})
	t.Run("a wrong token is refused without quoting it", func(t *testing.T) {
		if err := os.WriteFile(cfg.Auth.TokenFile, []byte("wrong-token\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(cfg.Auth.TokenFile, []byte("push-token\n"), 0o600)
		err := src.PushTag(ctx, cfg, testTag("deployment-0003", second, "x\n"))
		if err == nil || strings.Contains(err.Error(), "wrong-token") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("a server that never answers is given up on at the timeout", func(t *testing.T) {
		srv.SetMode("hang")
		defer srv.SetMode("")
		short := newSource(t)
		short.opts.Timeout = 300 * time.Millisecond
		err := short.PushTag(ctx, cfg, testTag("deployment-0004", second, "x\n"))
		if err == nil || !strings.Contains(err.Error(), "timed out") {
			t.Fatalf("err = %v, want a timeout", err)
		}
	})
	t.Run("the git cache holds no tag", func(t *testing.T) {
		if _, err := src.Check(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		if refs, _ := os.ReadDir(filepath.Join(src.dir(cfg), "refs", "tags")); len(refs) != 0 {
			t.Errorf("tags in the cache: %v", refs)
		}
	})
}
