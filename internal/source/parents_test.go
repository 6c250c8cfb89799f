package source

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/gittest"
)

func TestRevisionParents(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	src := newSource(t)
	cfg := repoConfig("shop/web", srv.RepoURL("shop/web"))
	ctx := context.Background()

	first := repo.Commit("main", "first", manifests)
	res, err := src.Check(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Root || res.Parents != nil {
		t.Errorf("a root commit: root %v, parents %v", res.Root, res.Parents)
	}
	repo.Commit("main", "second", map[string]string{"README.md": "2\n"})
	if res, err = src.Check(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{first}, res.Parents); diff != "" || res.Root {
		t.Errorf("parents (-want +got):\n%s", diff)
	}

	// Octopus merges of MaxParents and one more root commits, written in the served repo.
	tree := repo.Git("rev-parse", "main^{tree}")
	for _, n := range []int{MaxParents, MaxParents + 1} {
		args := []string{"commit-tree", tree, "-m", "octopus"}
		var want []string
		for i := range n {
			p := repo.Git("commit-tree", tree, "-m", fmt.Sprintf("root %d of %d", i, n))
			args = append(args, "-p", p)
			want = append(want, p)
		}
		repo.Git("update-ref", "refs/heads/main", repo.Git(args...))
		if res, err = src.Check(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		if n > MaxParents {
			want = nil // not kept: the history below is unknown
		}
		if diff := cmp.Diff(want, res.Parents); diff != "" || res.Root {
			t.Errorf("%d parents (-want +got):\n%s", n, diff)
		}
	}
}
