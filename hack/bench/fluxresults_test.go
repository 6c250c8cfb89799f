package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestCompare(t *testing.T) {
	tests := []struct {
		name          string
		deployd, flux figure
		goal          float64
		wantRatio     float64
		wantMet       string
	}{
		{"same unit, met", single(50 * time.Millisecond), single(200 * time.Millisecond), 0.25, 0.25, "yes"},
		{"same unit, missed", single(60 * time.Millisecond), single(200 * time.Millisecond), 0.25, 0.3, "no"},
		{"ms against s", single(2 * time.Second), single(40 * time.Second), 0.1, 0.05, "yes"},
		{"s against ms", single(20 * time.Second), single(5 * time.Second), 0, 4, ""},
		{"no Flux figure", value(10, "MB"), value(0, "MB"), 0.4, 0, "no"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &results{}
			r.compare("x", tt.deployd, tt.flux, tt.goal)
			got := r.Flux.Rows[0]
			if diff := cmp.Diff([]any{tt.wantRatio, tt.wantMet}, []any{round(got.Ratio), got.Met}); diff != "" {
				t.Errorf("ratio, met (-want +got):\n%s", diff)
			}
		})
	}
}

func round(v float64) float64 { return float64(int64(v*1e6+0.5)) / 1e6 }

func TestFluxMarkdownKeepsFailuresApart(t *testing.T) {
	r := &results{}
	r.fluxSettings(fluxOptions{interval: time.Minute, runs: 20, manyHigh: 20, idleHigh: 20})
	r.compare("push → objects applied, median", single(50*time.Millisecond), single(200*time.Millisecond), 0.25)
	r.fail("scenario 11 (idle)", os.ErrDeadlineExceeded)
	md := r.fluxMarkdown()
	for _, want := range []string{"| push → objects applied, median | 50.0 ms | 200 ms | 0.25× | ≤ 0.25× | yes |", "scenario 11 (idle)", "--concurrent"} {
		if !strings.Contains(md, want) {
			t.Errorf("the Flux table lacks %q:\n%s", want, md)
		}
	}
	if r.hasMain() {
		t.Errorf("hasMain() = true with only scenario 11's figures: a run of -only 11 would wipe the other table")
	}
	r.add(1, "push → applied, deployd", single(time.Millisecond), "", nil)
	if !r.hasMain() {
		t.Errorf("hasMain() = false with a scenario 1 row")
	}
}

func TestReadMemStatus(t *testing.T) {
	m, err := readMemStatus(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.anon <= 0 || m.file <= 0 {
		t.Errorf("readMemStatus(self) = %+v, want anonymous and file-backed pages", m)
	}
	if _, err := readMemStatus(-1); err == nil {
		t.Errorf("readMemStatus(-1): no error")
	}
}
