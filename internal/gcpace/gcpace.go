// Package gcpace sets how eagerly deployd's garbage collector runs: collecting when the
// heap has grown by half while deployd is idle, at the runtime's default while it is busy.
package gcpace

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"time"
)

// Options say when deployd counts as busy and which GOGC each state gets.
type Options struct {
	// Idle is the GOGC while deployd is idle. Its heap is mostly long-lived (records,
	// statuses, history) and it allocates little (about 1.3 MB/s at 1,000 polled
	// repos), so collecting at half the live heap's growth costs a few collections a
	// minute and keeps about 15 MB less resident at 1,000 repos.
	Idle int
	// Busy is the GOGC while busy: serving thousands of status reads a second, or a
	// cold start, collections at Idle would come several times a second.
	Busy int
	// BusyCycles is how many collections within one Every make it busy.
	BusyCycles uint64
	// Calm is how long without a busy interval before going back to Idle.
	Calm time.Duration
	// Every is how often the collections are counted.
	Every time.Duration
}

// DefaultOptions are deployd's: GOGC 50 idle, 100 (Go's default) busy, busy from two
// collections in a second, idle again after 30 calm seconds.
func DefaultOptions() Options {
	return Options{Idle: 50, Busy: 100, BusyCycles: 2, Calm: 30 * time.Second, Every: time.Second}
}

// FromEnv reports whether the environment sets GOGC, which then holds as it is, and
// describes the GC setting in force for the log.
func FromEnv(o Options) (set bool, describe string) {
	if v := os.Getenv("GOGC"); v != "" {
		return true, v + " (GOGC)"
	}
	return false, strconv.Itoa(o.Idle) + ", " + strconv.Itoa(o.Busy) + " while busy"
}

// Run sets GOGC to o.Idle and moves it between o.Idle and o.Busy as collections come
// fast or slow, until ctx ends; it then leaves GOGC at o.Busy. Back to idle, it collects
// and returns the freed memory to the OS at once.
func Run(ctx context.Context, o Options) {
	p := pacer{o: o, set: debug.SetGCPercent, cycles: gcCycles, release: debug.FreeOSMemory}
	p.run(ctx)
}

// pacer is Run's state, with the runtime's two calls as fields so tests can stand in.
type pacer struct {
	o       Options
	set     func(int) int
	cycles  func() uint64
	release func()
}

func (p pacer) run(ctx context.Context) {
	percent := p.o.Idle
	p.set(percent)
	defer p.set(p.o.Busy)
	tick := time.NewTicker(p.o.Every)
	defer tick.Stop()
	last, lastBusy := p.cycles(), time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			n := p.cycles()
			if n-last >= p.o.BusyCycles {
				lastBusy = now
			}
			last = n
			if next := next(p.o, now, lastBusy); next != percent {
				percent = next
				p.set(percent)
				if percent == p.o.Idle {
					// The busy spell's heap is garbage now: collect it and hand the
					// pages back, rather than keep them for a burst that may not come.
					p.release()
				}
			}
		}
	}
}

// next is the GOGC to run with at now, the last busy interval having ended at lastBusy
// (zero: never).
func next(o Options, now, lastBusy time.Time) int {
	if !lastBusy.IsZero() && now.Sub(lastBusy) < o.Calm {
		return o.Busy
	}
	return o.Idle
}

// gcCycles is how many collections the runtime has completed.
func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
