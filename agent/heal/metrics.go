package heal

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the node's healing measurements. Labels name volumes
// and NQNs, never device names: a device name changes with every
// renumbering, which would break every series exactly when it matters.
// A nil *Metrics records nothing, so tests and tools can leave it out.
type Metrics struct {
	controllerState *prometheus.GaugeVec
	reconnects      *prometheus.CounterVec
	notLive         prometheus.Histogram
	losses          *prometheus.CounterVec
	renumberings    *prometheus.CounterVec
	healActions     *prometheus.CounterVec
	healDuration    *prometheus.HistogramVec
	uevents         *prometheus.CounterVec
	scanErrors      prometheus.Counter
	reconcile       prometheus.Histogram
}

// NewMetrics registers the healing metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "rds", Subsystem: "node", Name: name, Help: help}, labels)
	}
	m := &Metrics{
		controllerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "rds", Subsystem: "node", Name: "controller_state",
			Help: "1 for the current health state of a staged volume's controller (live, reconnecting, lost, healing, failed), 0 for the others; absent while the state is unknown.",
		}, []string{"volume", "nqn", "state"}),
		reconnects: counterVec("reconnects_total",
			"Successful kernel reconnects of a staged volume's controller.", "volume"),
		notLive: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "rds", Subsystem: "node", Name: "not_live_seconds",
			Help:    "Time a staged volume spent not live, observed when it is live again.",
			Buckets: []float64{0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800},
		}),
		losses: counterVec("controller_losses_total",
			"Times a staged volume lost its controller for good (deleted, or no namespace left).", "volume"),
		renumberings: counterVec("renumberings_total",
			"Times a staged volume's namespace came back with a different device number.", "volume"),
		healActions: counterVec("heal_actions_total",
			"Healing actions by kind and result (ok or error).", "kind", "result"),
		healDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "rds", Subsystem: "node", Name: "heal_duration_seconds",
			Help:    "Duration of healing actions by kind.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120},
		}, []string{"kind"}),
		uevents: counterVec("uevents_total",
			"Kernel uevents the healing loop received, by subsystem and action.", "subsystem", "action"),
		scanErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "rds", Subsystem: "node", Name: "scan_errors_total",
			Help: "sysfs reads of the healing loop that failed other than by the device being gone.",
		}),
		reconcile: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "rds", Subsystem: "node", Name: "reconcile_duration_seconds",
			Help:    "Time the healing loop spent handling one event, scan or rescan.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9), // 100µs .. 6.5s
		}),
	}
	reg.MustRegister(m.controllerState, m.reconnects, m.notLive, m.losses, m.renumberings,
		m.healActions, m.healDuration, m.uevents, m.scanErrors, m.reconcile)
	return m
}

// Heal action kinds recorded by the loop itself; repairers add their own.
const (
	KindRepair           = "repair"
	KindOrphanDisconnect = "orphan_disconnect"
	KindShutdownTmo      = "shutdown_ctrl_loss_tmo"
)

// ObserveHealAction records one healing action. It is exported so that the
// repair steps plugged into the loop account for their own sub-steps
// (reconnect, device-mapper reload) under the same metric.
func (m *Metrics) ObserveHealAction(kind string, err error, took time.Duration) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.healActions.WithLabelValues(kind, result).Inc()
	m.healDuration.WithLabelValues(kind).Observe(took.Seconds())
}

// track creates a volume's counters at zero so that rate() works from the
// first loss on; zero is the true count since the volume was staged.
func (m *Metrics) track(volumeID string) {
	if m == nil {
		return
	}
	m.reconnects.WithLabelValues(volumeID)
	m.losses.WithLabelValues(volumeID)
	m.renumberings.WithLabelValues(volumeID)
}

// forget removes every series of a volume that is no longer staged.
func (m *Metrics) forget(volumeID string) {
	if m == nil {
		return
	}
	labels := prometheus.Labels{"volume": volumeID}
	m.controllerState.DeletePartialMatch(labels)
	m.reconnects.DeletePartialMatch(labels)
	m.losses.DeletePartialMatch(labels)
	m.renumberings.DeletePartialMatch(labels)
}

// setState publishes the one-hot state; an unknown state has no series at
// all rather than a row of zeros that would read as "known and not live".
func (m *Metrics) setState(volumeID, nqn string, s State) {
	if m == nil {
		return
	}
	m.controllerState.DeletePartialMatch(prometheus.Labels{"volume": volumeID})
	if s == StateUnknown {
		return
	}
	for _, each := range reportedStates {
		v := 0.0
		if each == s {
			v = 1
		}
		m.controllerState.WithLabelValues(volumeID, nqn, string(each)).Set(v)
	}
}

func (m *Metrics) reconnected(volumeID string) {
	if m != nil {
		m.reconnects.WithLabelValues(volumeID).Inc()
	}
}

func (m *Metrics) lost(volumeID string) {
	if m != nil {
		m.losses.WithLabelValues(volumeID).Inc()
	}
}

func (m *Metrics) renumbered(volumeID string) {
	if m != nil {
		m.renumberings.WithLabelValues(volumeID).Inc()
	}
}

func (m *Metrics) observeNotLive(d time.Duration) {
	if m != nil {
		m.notLive.Observe(d.Seconds())
	}
}

func (m *Metrics) uevent(subsystem, action string) {
	if m != nil {
		m.uevents.WithLabelValues(subsystem, action).Inc()
	}
}

func (m *Metrics) scanError() {
	if m != nil {
		m.scanErrors.Inc()
	}
}

func (m *Metrics) observeReconcile(d time.Duration) {
	if m != nil {
		m.reconcile.Observe(d.Seconds())
	}
}
