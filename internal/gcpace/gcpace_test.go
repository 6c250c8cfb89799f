package gcpace

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	o := DefaultOptions()
	now := time.Now()
	for _, tc := range []struct {
		name     string
		lastBusy time.Time
		want     int
	}{
		{"never busy", time.Time{}, o.Idle},
		{"busy this interval", now, o.Busy},
		{"busy within the calm", now.Add(-o.Calm + time.Second), o.Busy},
		{"calm for as long as it takes", now.Add(-o.Calm), o.Idle},
		{"calm for long", now.Add(-time.Hour), o.Idle},
	} {
		if got := next(o, now, tc.lastBusy); got != tc.want {
			t.Errorf("%s: next = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestPacer drives the loop with a stand-in collection count: fast collections make it
// busy, and it goes back to idle once they have been slow for Calm; it leaves Busy
// when stopped.
func TestPacer(t *testing.T) {
	o := Options{Idle: 50, Busy: 100, BusyCycles: 2, Calm: 30 * time.Millisecond, Every: time.Millisecond}
	var cycles atomic.Uint64
	var fast atomic.Bool
	sets := make(chan int, 1000)
	var released atomic.Int32
	p := pacer{o: o, set: func(v int) int { sets <- v; return 0 }, release: func() { released.Add(1) }, cycles: func() uint64 {
		if fast.Load() {
			return cycles.Add(5)
		}
		return cycles.Load()
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.run(ctx); close(done) }()

	want := func(v int, why string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case got := <-sets:
				if got == v {
					return
				}
			case <-deadline:
				t.Fatalf("%s: GOGC never set to %d", why, v)
			}
		}
	}
	want(o.Idle, "at start")
	if released.Load() != 0 {
		t.Errorf("memory released at start, before any busy spell")
	}
	fast.Store(true)
	want(o.Busy, "with collections coming fast")
	fast.Store(false)
	want(o.Idle, "once they have been slow for Calm")
	cancel()
	<-done
	if released.Load() == 0 {
		t.Errorf("back to idle without handing the busy spell's memory back")
	}
	want(o.Busy, "when stopped")
}

func TestGCCycles(t *testing.T) {
	before := gcCycles()
	runtime.GC()
	if after := gcCycles(); after <= before {
		t.Errorf("collections counted %d before a GC and %d after", before, after)
	}
}

func TestFromEnv(t *testing.T) {
	t.Setenv("GOGC", "")
	if set, d := FromEnv(DefaultOptions()); set || d != "50, 100 while busy" {
		t.Errorf("without GOGC: %v %q", set, d)
	}
	t.Setenv("GOGC", "200")
	if set, d := FromEnv(DefaultOptions()); !set || d != "200 (GOGC)" {
		t.Errorf("with GOGC=200: %v %q", set, d)
	}
}
