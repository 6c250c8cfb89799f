package history

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/state"
)

func TestTagStateIsKeptApart(t *testing.T) {
	s := NewStore(state.New(env.Client, env.Namespace(t)), 2)
	ctx := context.Background()
	rec, err := s.Create(ctx, repo, Record{Commit: Commit{SHA: strings.Repeat("a", 40)}, Started: time.Now(), Phase: Applying})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("refused ", 1000)
	if err := s.SetTag(ctx, repo, rec.Number, Tag{Name: "deployment-0001", State: "pending", Error: long, Attempts: 3}); err != nil {
		t.Fatal(err)
	}
	rec.Phase = Succeeded // the runner's write does not carry the tag, and must not lose it
	if err := s.Update(ctx, repo, rec); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctx, repo)
	if err != nil || len(list) != 1 || list[0].Tag == nil {
		t.Fatalf("List = %+v, %v", list, err)
	}
	want := Tag{Name: "deployment-0001", State: "pending", Error: long[:maxTagError] + "…", Attempts: 3}
	if diff := cmp.Diff(want, *list[0].Tag); diff != "" {
		t.Errorf("tag (-want +got):\n%s", diff)
	}
	// Records trimmed away take their tag state with them.
	for range 2 {
		if _, err := s.Create(ctx, repo, Record{Phase: Succeeded}); err != nil {
			t.Fatal(err)
		}
	}
	cm, err := s.states.Get(ctx, repo.StateName())
	if err != nil || strings.Contains(cm.Data[tagsKey], "deployment-0001") {
		t.Errorf("tags kept after the record was trimmed: %q, %v", cm.Data[tagsKey], err)
	}
}
