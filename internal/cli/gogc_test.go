package cli

import (
	"runtime/debug"
	"testing"
)

func TestSetGOGC(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	t.Setenv("GOGC", "")
	if got := setGOGC(); got != "50" {
		t.Errorf("without GOGC: setGOGC() = %q, want 50", got)
	}
	if got := debug.SetGCPercent(100); got != defaultGOGC {
		t.Errorf("without GOGC the runtime's GC percent is %d, want %d", got, defaultGOGC)
	}

	t.Setenv("GOGC", "200")
	if got := setGOGC(); got != "200 (GOGC)" {
		t.Errorf("with GOGC=200: setGOGC() = %q", got)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC set, deployd changed the GC percent to %d", got)
	}
}
