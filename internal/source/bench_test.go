package source

import (
	"context"
	"testing"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/gittest"
)

// BenchmarkCheckUnchanged and BenchmarkPollUnchanged are what a repo whose branch has
// not moved costs once an interval, through a check and through a poll.
func BenchmarkCheckUnchanged(b *testing.B) {
	benchmarkUnchanged(b, (*Source).Check)
}

func BenchmarkPollUnchanged(b *testing.B) {
	benchmarkUnchanged(b, (*Source).Poll)
}

func benchmarkUnchanged(b *testing.B, check func(*Source, context.Context, config.Repo) (Result, error)) {
	srv := gittest.NewServer(b)
	srv.NewRepo(b, "shop/web").Commit("main", "first", manifests)
	opts := DefaultOptions()
	opts.CacheDir = b.TempDir()
	src := New(opts)
	cfg := repoConfig("shop/web", srv.RepoURL("shop/web"))
	ctx := context.Background()
	if _, err := src.Check(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := check(src, ctx, cfg); err != nil {
			b.Fatal(err)
		}
	}
}
