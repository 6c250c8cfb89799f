package render

import (
	"context"
	"testing"
)

// BenchmarkRender is the cost of one render of a small app: plain files in this process,
// and a kustomize overlay in a worker (with the spare started ahead, as in deployd).
func BenchmarkRender(b *testing.B) {
	plainRepo := map[string][]byte{"deploy/manifests/app.yaml": kustomizeRepo["deploy/base/deployment.yaml"]}
	b.Run("plain", func(b *testing.B) {
		for b.Loop() {
			if _, err := Render(context.Background(), plainRepo, "deploy/manifests", DefaultLimits()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("kustomize in this process, unconfined, for comparison", func(b *testing.B) {
		for b.Loop() {
			if _, err, _ := build(request{Files: kustomizeRepo, Dir: "deploy/overlays/dev", Limits: DefaultLimits()}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("kustomize", func(b *testing.B) {
		for b.Loop() {
			if _, err := Render(context.Background(), kustomizeRepo, "deploy/overlays/dev", DefaultLimits()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkWorkerStart is what a build would wait without a spare: fork, exec and
// initialise a worker, until it exits on an empty request.
func BenchmarkWorkerStart(b *testing.B) {
	for b.Loop() {
		w, err := startWorker(DefaultLimits().MaxMemory)
		if err != nil {
			b.Fatal(err)
		}
		w.stdin.Close()
		if err := w.cmd.Wait(); err != nil {
			b.Fatal(err)
		}
	}
}
