package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the node service's own measurements; CSI call timings come
// from the shared csi_plugin_operations_seconds.
type Metrics struct {
	attach     prometheus.Histogram
	operations *prometheus.CounterVec
}

// NewMetrics registers the node metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		attach: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "rds", Subsystem: "node", Name: "attach_duration_seconds",
			Help:    "Time from the start of a connect to the volume's block device being present.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60},
		}),
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rds", Subsystem: "node", Name: "operations_total",
			Help: "Node operations by kind (stage, unstage, publish, unpublish, expand, format) and result (ok or error).",
		}, []string{"operation", "result"}),
	}
	reg.MustRegister(m.attach, m.operations)
	return m
}

func (m *Metrics) observeAttach(seconds float64) {
	if m != nil {
		m.attach.Observe(seconds)
	}
}

func (m *Metrics) count(operation string, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.operations.WithLabelValues(operation, result).Inc()
}
