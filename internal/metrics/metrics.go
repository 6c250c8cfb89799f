// Package metrics exposes deployd's Prometheus metrics: deployments by result and their
// duration, git checks and the git cache's size, queue depth, webhook deliveries and HTTP requests. Every label
// value is bounded (phases, route templates, status codes), never a raw path or repo.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/deploy"
	"github.com/deployd/deployd/internal/webhook"
)

// Metrics holds the collectors.
type Metrics struct {
	reg         *prometheus.Registry
	deployments *prometheus.CounterVec
	duration    prometheus.Histogram
	checks      *prometheus.HistogramVec
	checkErrors prometheus.Counter
	webhooks    *prometheus.CounterVec
	requests    *prometheus.HistogramVec
	obs         observers
	ghResponses *prometheus.CounterVec
	ghDropped   prometheus.Counter
	kube        *prometheus.CounterVec
	tags        tagMetrics
}

// New registers the collectors; QueueDepth and GitCache add the gauges read from parts
// built later.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		deployments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deployd_deployments_total",
			Help: "Deployments that ended, by result (the final phase)."}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "deployd_deploy_duration_seconds",
			Help: "Time from a deployment's start to its end.", Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}}),
		checks: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "deployd_git_check_duration_seconds",
			Help: "Time to check a repo: ref listing, and a fetch when there is a new commit.", Buckets: prometheus.DefBuckets}, []string{"result"}),
		checkErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "deployd_git_check_errors_total",
			Help: "Repo checks that failed (git server down, auth, timeouts)."}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deployd_webhook_deliveries_total",
			Help: "Webhook deliveries, by event and answered status code."}, []string{"event", "code"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "deployd_http_request_duration_seconds",
			Help: "HTTP request durations, by route template, method and status code.", Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}},
			[]string{"route", "method", "code"}),
	}
	m.ghResponses = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deployd_github_responses_total",
		Help: "GitHub API responses, by status code."}, []string{"code"})
	m.ghDropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "deployd_github_reports_dropped_total",
		Help: "Reports to GitHub given up on (GitHub down past the bound, refused, or a repo it cannot see)."})
	m.kube = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deployd_kube_requests_total",
		Help: "Requests sent to the Kubernetes API server, by method and status code (0: no answer)."}, []string{"method", "code"})
	m.reg.MustRegister(m.ghResponses, m.ghDropped, m.kube)
	m.tags = newTagMetrics(m.reg)
	m.reg.MustRegister(m.deployments, m.duration, m.checks, m.checkErrors, m.webhooks, m.requests,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Outcome records a repo check.
func (m *Metrics) Outcome(o controller.Outcome) {
	result := "ok"
	if o.Action == controller.ActionCheckFailed {
		result = "error"
		m.checkErrors.Inc()
	}
	m.checks.WithLabelValues(result).Observe(o.Duration.Seconds())
}

// Event records a deployment that ended.
func (m *Metrics) Event(e deploy.Event) {
	r := e.Record
	if !r.Phase.Done() || r.Ended.IsZero() {
		return
	}
	m.deployments.WithLabelValues(string(r.Phase)).Inc()
	m.duration.Observe(r.Ended.Sub(r.Started).Seconds())
}

// Delivery records a webhook delivery. Unknown event names are folded into "other".
func (m *Metrics) Delivery(r webhook.Result) {
	event := r.Event
	switch event {
	case "push", "ping", "deployment":
	default:
		event = "other"
	}
	m.webhooks.WithLabelValues(event, strconv.Itoa(r.Status)).Inc()
}

// Middleware times every request, labelled with the matched route template, the method
// (one of methods, or "other": a client may send any token there) and the status code.
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" || route == "/" {
			route = "unmatched"
		}
		m.observer(route, r.Method, rec.code).Observe(time.Since(start).Seconds())
	})
}

// Timer returns what times the requests of one route, method and status code answered
// outside Middleware (the status API's fast path), in the same series.
func (m *Metrics) Timer(route, method string, code int) func(took time.Duration) {
	o := m.observer(route, method, code)
	return func(took time.Duration) { o.Observe(took.Seconds()) }
}

// methods are the HTTP methods counted by name.
var methods = map[string]bool{http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true}

// observerKey names one series of the request histogram.
type observerKey struct {
	route, method string
	code          int
}

// observers keeps the request histogram's series by their labels: finding one through
// the vector hashes and checks its three label values on every request.
type observers struct {
	mu sync.RWMutex
	m  map[observerKey]prometheus.Observer
}

// observer returns the series for route, method and code.
func (m *Metrics) observer(route, method string, code int) prometheus.Observer {
	if !methods[method] {
		method = "other"
	}
	k := observerKey{route, method, code}
	m.obs.mu.RLock()
	o := m.obs.m[k]
	m.obs.mu.RUnlock()
	if o != nil {
		return o
	}
	o = m.requests.WithLabelValues(route, method, strconv.Itoa(code))
	m.obs.mu.Lock()
	if m.obs.m == nil {
		m.obs.m = map[observerKey]prometheus.Observer{}
	}
	m.obs.m[k] = o
	m.obs.mu.Unlock()
	return o
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (flushes, deadlines).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// GitHubResponse counts a GitHub API response.
func (m *Metrics) GitHubResponse(code int) { m.ghResponses.WithLabelValues(strconv.Itoa(code)).Inc() }

// KubeRequest counts a request to the Kubernetes API server.
func (m *Metrics) KubeRequest(method string, code int) {
	m.kube.WithLabelValues(method, strconv.Itoa(code)).Inc()
}

// QueueDepth exports the work queue's length, as depth returns it.
func (m *Metrics) QueueDepth(depth func() int) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "deployd_queue_depth", Help: "Repos waiting in the work queue."},
		func() float64 { return float64(depth()) }))
}

// GitCache exports the git cache's disk use, as bytes returns it.
func (m *Metrics) GitCache(bytes func() int64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "deployd_git_cache_bytes",
		Help: "Bytes the git caches take on disk (--cache-dir), walked at most every 30 s."},
		func() float64 { return float64(bytes()) }))
}

// Drift exports how many applied objects, and repos, drifted from what deployd applied.
func (m *Metrics) Drift(counts func() (objects, repos int)) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "deployd_drifted_objects", Help: "Applied objects that no longer match what deployd applied (changed or deleted)."},
			func() float64 { o, _ := counts(); return float64(o) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "deployd_repos_out_of_sync", Help: "Repos with at least one drifted object."},
			func() float64 { _, r := counts(); return float64(r) }))
}

// GitHubDropped counts a report given up on.
func (m *Metrics) GitHubDropped() { m.ghDropped.Inc() }
