package metrics

import "github.com/prometheus/client_golang/prometheus"

// tagMetrics count the pushes of deployments' git tags.
type tagMetrics struct {
	pushed   prometheus.Counter
	failures prometheus.Counter
}

func newTagMetrics(reg *prometheus.Registry) tagMetrics {
	t := tagMetrics{
		pushed: prometheus.NewCounter(prometheus.CounterOpts{Name: "deployd_tags_pushed_total",
			Help: "Deployment tags pushed to git servers (or found there already)."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "deployd_tag_push_failures_total",
			Help: "Deployment tag pushes that failed (each attempt: refused by the server, auth, network, timeout)."}),
	}
	reg.MustRegister(t.pushed, t.failures)
	return t
}

// TagPush records one attempt to push a deployment's tag; err is nil when it was pushed.
func (m *Metrics) TagPush(err error) {
	if err != nil {
		m.tags.failures.Inc()
		return
	}
	m.tags.pushed.Inc()
}
