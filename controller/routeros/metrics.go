package routeros

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics records how RouterOS commands perform. A nil *Metrics records
// nothing, so tests and tools can run a Client without a registry.
type Metrics struct {
	commandDuration *prometheus.HistogramVec
}

// NewMetrics creates the RouterOS metrics and registers them with reg (when
// reg is not nil). Registering twice with the same registry panics, as
// prometheus.MustRegister does: it is a wiring mistake.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		commandDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "rds",
			Subsystem: "routeros",
			Name:      "command_duration_seconds",
			Help:      "Time from a RouterOS command being asked for to its result, including waiting for a session slot and for a connection; by command kind and result (ok or the error kind).",
			// RouterOS answers prints in milliseconds; a file disk add or a
			// copy can take seconds; 30s is the default command timeout.
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30},
		}, []string{"command", "result"}),
	}
	if reg != nil {
		reg.MustRegister(m.commandDuration)
	}
	return m
}

func (m *Metrics) observeCommand(command string, err error, d time.Duration) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = KindOf(err).String()
	}
	m.commandDuration.WithLabelValues(command, result).Observe(d.Seconds())
}
