package history

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/simcluster"
	"github.com/deployd/deployd/internal/state"
)

var env *simcluster.Env

func TestMain(m *testing.M) { os.Exit(simcluster.Main(m, &env)) }

var repo = config.Repo{Name: "shop/web", Environment: "dev"}

func TestKeepsTheNewestAndNumbersContinue(t *testing.T) {
	s := NewStore(state.New(env.Client, env.Namespace(t)), 50)
	ctx := context.Background()
	for i := 1; i <= 60; i++ {
		rec, err := s.Create(ctx, repo, Record{Commit: Commit{SHA: fmt.Sprintf("%040d", i)}, Trigger: "poll", Started: time.Now(), Phase: Applying})
		if err != nil {
			t.Fatal(err)
		}
		if rec.Number != i {
			t.Fatalf("record %d got number %d", i, rec.Number)
		}
		rec.Phase, rec.Ended = Succeeded, time.Now()
		if err := s.Update(ctx, repo, rec); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.List(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 50 || list[0].Number != 60 || list[49].Number != 11 || list[0].Name() != "deployment-0060" || list[0].Phase != Succeeded {
		t.Errorf("kept %d records, newest %d, oldest %d", len(list), list[0].Number, list[len(list)-1].Number)
	}
	// A restarted deployd (a new Store) continues the sequence.
	rec, err := NewStore(state.New(env.Client, s.states.Namespace()), 50).Create(ctx, repo, Record{Phase: Applying})
	if err != nil || rec.Number != 61 {
		t.Errorf("after restart: number %d, %v", rec.Number, err)
	}
}

func TestTwoWritersLoseNothing(t *testing.T) {
	ns := env.Namespace(t)
	a, b := NewStore(state.New(env.Client, ns), 100), NewStore(state.New(env.Client, ns), 100)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var numbers []int
	for w, s := range []*Store{a, b} {
		wg.Go(func() {
			for i := range 15 {
				rec, err := s.Create(context.Background(), repo, Record{Trigger: fmt.Sprintf("writer%d-%d", w, i), Phase: Applying})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				numbers = append(numbers, rec.Number)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	sort.Ints(numbers)
	for i, n := range numbers {
		if n != i+1 {
			t.Fatalf("numbers %v: want 1..30 each once", numbers)
		}
	}
	// Read as a restarted deployd would: a store remembers only its own writes.
	list, _ := NewStore(state.New(env.Client, ns), 100).List(context.Background(), repo)
	if len(list) != 30 {
		t.Errorf("%d records stored, want 30", len(list))
	}
}

func TestTheSizeBoundHolds(t *testing.T) {
	s := NewStore(state.New(env.Client, env.Namespace(t)), 1000)
	big := make([]Object, 200)
	for i := range big {
		big[i] = Object{Object: fmt.Sprintf("ConfigMap/shop/config-%04d", i), Action: "configured", Status: "Current", Message: "Resource is always ready"}
	}
	for range 60 {
		if _, err := s.Create(context.Background(), repo, Record{Phase: Succeeded, Objects: big}); err != nil {
			t.Fatal(err)
		}
	}
	list, _ := s.List(context.Background(), repo)
	if len(list) >= 60 || list[0].Number != 60 {
		t.Errorf("%d records kept (newest %d): the oldest should have gone to fit", len(list), list[0].Number)
	}
}

// TestKeepsTheChart: a record keeps how it was rendered and the chart's version, for a
// restarted deployd to read.
func TestKeepsTheChart(t *testing.T) {
	s := NewStore(state.New(env.Client, env.Namespace(t)), 50)
	ctx := context.Background()
	rec, err := s.Create(ctx, repo, Record{Phase: Applying, Started: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	rec.Phase, rec.Renderer, rec.Chart = Succeeded, "helm", Chart{Name: "web", Version: "1.4.0"}
	if err := s.Update(ctx, repo, rec); err != nil {
		t.Fatal(err)
	}
	list, err := NewStore(state.New(env.Client, s.states.Namespace()), 50).List(ctx, repo)
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %d records, %v", len(list), err)
	}
	if got := list[0].Renderer + " " + list[0].Chart.Name + " " + list[0].Chart.Version; got != "helm web 1.4.0" {
		t.Errorf("read back %q, want helm web 1.4.0", got)
	}
}
