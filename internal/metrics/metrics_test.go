package metrics

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestRequestLabelsAreBounded sends requests with 200 made-up methods, as a stranger
// may: they share one series, labelled "other", instead of adding one each. Requests
// timed outside the middleware (Timer) count in the same series as those through it.
func TestRequestLabelsAreBounded(t *testing.T) {
	m := New()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /x", func(w http.ResponseWriter, r *http.Request) {})
	h := m.Middleware(mux)
	for i := range 200 {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(fmt.Sprintf("M%d", i), "/x", nil))
	}
	for range 3 {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/x", nil))
	}
	timer := m.Timer("GET /x", http.MethodGet, http.StatusOK)
	timer(time.Millisecond)
	timer(time.Millisecond)
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]uint64{}
	for _, f := range families {
		if f.GetName() != "deployd_http_request_duration_seconds" {
			continue
		}
		for _, s := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			series[labels["route"]+" "+labels["method"]+" "+labels["code"]] = s.GetHistogram().GetSampleCount()
		}
	}
	want := map[string]uint64{"unmatched other 405": 200, "GET /x GET 200": 5}
	if len(series) != len(want) {
		t.Fatalf("series %v, want %v", series, want)
	}
	for k, n := range want {
		if series[k] != n {
			t.Errorf("series %q counted %d, want %d (all: %v)", k, series[k], n, series)
		}
	}
}
