package source

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/gittest"
)

func TestContains(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	src := newSource(t)
	cfg := repoConfig("shop/web", srv.RepoURL("shop/web"))
	ctx := context.Background()
	first := repo.Commit("main", "first", manifests)
	if _, err := src.Check(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	// Pushed before deployd looks again: it fetches only the newest, shallow.
	overtaken := repo.Commit("main", "overtaken", map[string]string{"deploy/manifests/cm.yaml": "kind: ConfigMap\n# 2\n"})
	head := repo.Commit("main", "head", map[string]string{"deploy/manifests/cm.yaml": "kind: ConfigMap\n# 3\n"})
	if _, err := src.Check(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		heads  []string
		prefix string
		want   Containment
	}{
		{"a head contains itself", []string{head}, head, Containment{Head: head, Commit: head}},
		{"a commit deployd never fetched is found as the head's parent", []string{head}, overtaken, Containment{Head: head, Commit: overtaken}},
		{"by a prefix of 7", []string{head}, overtaken[:7], Containment{Head: head, Commit: overtaken}},
		{"the first head that contains it answers", []string{first, head}, overtaken, Containment{Head: head, Commit: overtaken}},
		{"an older head does not contain a newer commit", []string{first}, head, Containment{Complete: true}},
		{"below the shallow boundary is not known", []string{head}, first, Containment{Complete: false}},
		{"a head the cache does not have is not known", []string{"1234567890123456789012345678901234567890"}, head, Containment{Complete: false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := src.Contains(cfg, tc.heads, tc.prefix)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	t.Run("a rewritten branch's whole history is read: the old commit is not on it", func(t *testing.T) {
		rewritten := repo.ForcePush("main", "rewritten", manifests)
		if _, err := src.Check(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		got, err := src.Contains(cfg, []string{rewritten}, head)
		if err != nil || got != (Containment{Complete: true}) {
			t.Errorf("Contains = %+v, %v; want not found, complete", got, err)
		}
	})
	for _, bad := range []string{"abc", "not-a-sha", "12345678901234567890123456789012345678901"} {
		if _, err := src.Contains(cfg, []string{head}, bad); err == nil {
			t.Errorf("Contains(%q) took it", bad)
		}
	}
}

func TestContainsIsBounded(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "shop/web")
	src := newSource(t)
	cfg := repoConfig("shop/web", repo.FileURL()) // file:// is fetched whole: three commits
	repo.Commit("main", "one", manifests)
	repo.Commit("main", "two", map[string]string{"README.md": "2\n"})
	head := repo.Commit("main", "three", map[string]string{"README.md": "3\n"})
	if _, err := src.Check(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	absent := "abcdef0"
	if got, err := src.contains(cfg, []string{head}, absent, 3); err != nil || got != (Containment{Complete: true}) {
		t.Errorf("within the bound: %+v, %v; want the whole history read", got, err)
	}
	if got, err := src.contains(cfg, []string{head}, absent, 2); err != nil || got != (Containment{Complete: false}) {
		t.Errorf("one commit over the bound: %+v, %v; want the walk cut, not complete", got, err)
	}
}
