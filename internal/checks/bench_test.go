package checks

import (
	"context"
	"testing"

	"github.com/deployd/deployd/internal/githubtest"
)

// BenchmarkPublish measures one preview published to the local GitHub stand-in, as a
// check run updated in place and as a status plus an edited comment, with 10 annotations.
func BenchmarkPublish(b *testing.B) {
	for _, tt := range []struct {
		name string
		new  func(testing.TB, *githubtest.Server) *Publisher
	}{
		{"check run", func(tb testing.TB, gh *githubtest.Server) *Publisher { return newApp(tb, gh, testOptions()) }},
		{"status and comment", func(tb testing.TB, gh *githubtest.Server) *Publisher { return newToken(tb, gh, testOptions()) }},
	} {
		b.Run(tt.name, func(b *testing.B) {
			gh := githubtest.New(b)
			p := tt.new(b, gh)
			r := preview("prod", "failure")
			r.Annotations = annotations(10)
			for b.Loop() {
				if err := p.Publish(context.Background(), r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
