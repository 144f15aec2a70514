// Package events records Kubernetes Events on PVCs from one long-lived
// recorder, through client-go's REST layer and the core/v1 types only: not
// the generated clientset, whose API groups would cost the node agent about
// 9 MiB of resident memory (cmd/rds-csi-agent tests that it is not
// linked).
package events

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
)

const (
	// queueSize bounds the events waiting for their PVC to be read; more
	// are dropped and counted, so that recording never waits for the API.
	queueSize = 256
	// callTimeout bounds each API call the recorder makes: a PVC read, and
	// each write of an event.
	callTimeout = 10 * time.Second
	// maxMessageBytes is the API server's limit on an event's message.
	maxMessageBytes = 1024
)

// Reasons an event is dropped, the label of rds_kube_events_dropped_total.
const (
	// DropNoPVC: the object's PVC is unknown (a volume created without the
	// csi-provisioner's --extra-create-metadata).
	DropNoPVC = "no_pvc"
	// DropPVCUnreadable: the PVC could not be read (deleted, no permission,
	// API unreachable).
	DropPVCUnreadable = "pvc_unreadable"
	// DropQueueFull: events came faster than the API took them.
	DropQueueFull = "queue_full"
)

type pvcEvent struct {
	namespace, name, eventType, reason, message string
}

// Recorder records Events on PVCs through one long-lived event broadcaster.
// PVC never blocks: events wait in a bounded queue for one goroutine that
// reads each PVC (for its UID, so that `kubectl describe pvc` shows the
// event) and hands the event to client-go, which aggregates repeats and
// writes them. An event that cannot be placed is logged, counted and
// dropped: Events are for people, and never hold up the caller.
type Recorder struct {
	api         API
	broadcaster record.EventBroadcaster
	events      record.EventRecorder
	timeout     time.Duration
	queue       chan pvcEvent
	ctx         context.Context // ends at Shutdown, cancelling calls in flight
	stop        context.CancelFunc
	done        chan struct{}
	dropped     *prometheus.CounterVec
}

// NewRecorder starts a recorder whose events name component (e.g.
// "rds-csi-agent") and host (the node) as their source, and registers its
// metrics on reg. One per process: call Shutdown when done.
func NewRecorder(api API, component, host string, reg prometheus.Registerer) *Recorder {
	return newRecorder(api, component, host, reg, callTimeout)
}

func newRecorder(api API, component, host string, reg prometheus.Registerer, timeout time.Duration) *Recorder {
	ctx, stop := context.WithCancel(context.Background())
	r := &Recorder{
		api:         api,
		broadcaster: record.NewBroadcaster(),
		timeout:     timeout,
		queue:       make(chan pvcEvent, queueSize),
		ctx:         ctx,
		stop:        stop,
		done:        make(chan struct{}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rds", Subsystem: "kube", Name: "events_dropped_total",
			Help: "Kubernetes Events not recorded, by reason: no_pvc (the volume's PVC is unknown: run the csi-provisioner with --extra-create-metadata), pvc_unreadable (the PVC could not be read), queue_full (the API did not keep up).",
		}, []string{"reason"}),
	}
	writes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "rds", Subsystem: "kube", Name: "event_writes_total",
		Help: "Writes of Kubernetes Events to the API by result (ok or error); client-go retries a write that failed in transit.",
	}, []string{"result"})
	for _, reason := range []string{DropNoPVC, DropPVCUnreadable, DropQueueFull} {
		r.dropped.WithLabelValues(reason)
	}
	writes.WithLabelValues("ok")
	writes.WithLabelValues("error")
	reg.MustRegister(r.dropped, writes)

	r.broadcaster.StartStructuredLogging(2)
	r.broadcaster.StartRecordingToSink(&sink{api: api, ctx: ctx, timeout: timeout, writes: writes})
	// Events name their object by an ObjectReference, which needs no type
	// lookup: an empty scheme serves.
	r.events = r.broadcaster.NewRecorder(runtime.NewScheme(), corev1.EventSource{Component: component, Host: host})
	go r.run()
	return r
}

// PVC records an event (eventType corev1.EventTypeNormal or Warning) on
// the PVC namespace/name. It returns at once. Without a PVC the event is
// dropped, which is logged at V(2) only: it is the normal state of volumes
// created without the provisioner's metadata.
func (r *Recorder) PVC(namespace, name, eventType, reason, message string) {
	if namespace == "" || name == "" {
		r.dropped.WithLabelValues(DropNoPVC).Inc()
		klog.V(2).InfoS("No PVC known, event not recorded (the csi-provisioner needs --extra-create-metadata)", "reason", reason, "message", message)
		return
	}
	if r.ctx.Err() != nil {
		return // shut down
	}
	select {
	case r.queue <- pvcEvent{namespace: namespace, name: name, eventType: eventType, reason: reason, message: truncate(message, maxMessageBytes)}:
	default:
		r.dropped.WithLabelValues(DropQueueFull).Inc()
		klog.ErrorS(nil, "Too many events waiting for the API, event dropped", "pvc", klog.KRef(namespace, name), "reason", reason, "message", message)
	}
}

// Shutdown stops the recorder; events still queued or being written are
// dropped. Call it once, after the last call of PVC.
func (r *Recorder) Shutdown() {
	r.stop()
	<-r.done
	r.broadcaster.Shutdown()
}

func (r *Recorder) run() {
	defer close(r.done)
	for {
		select {
		case <-r.ctx.Done():
			return
		case e := <-r.queue:
			r.record(e)
		}
	}
}

func (r *Recorder) record(e pvcEvent) {
	ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
	defer cancel()
	pvc, err := r.api.GetPVC(ctx, e.namespace, e.name)
	if err != nil {
		if r.ctx.Err() != nil {
			return // shut down
		}
		r.dropped.WithLabelValues(DropPVCUnreadable).Inc()
		klog.ErrorS(err, "Cannot read the PVC, event dropped", "pvc", klog.KRef(e.namespace, e.name), "reason", e.reason, "message", e.message)
		return
	}
	ref := &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID}
	r.events.Event(ref, e.eventType, e.reason, e.message)
}

// truncate cuts s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strings.ToValidUTF8(s[:cut], "") + mark
}

// sink writes events with a deadline on every call (client-go's own sink
// has none) and counts the outcomes.
type sink struct {
	api     API
	ctx     context.Context
	timeout time.Duration
	writes  *prometheus.CounterVec
}

func (s *sink) Create(e *corev1.Event) (*corev1.Event, error) {
	return s.write(func(ctx context.Context) (*corev1.Event, error) {
		return s.api.CreateEvent(ctx, e)
	})
}

func (s *sink) Update(e *corev1.Event) (*corev1.Event, error) {
	return s.write(func(ctx context.Context) (*corev1.Event, error) {
		return s.api.UpdateEvent(ctx, e)
	})
}

func (s *sink) Patch(e *corev1.Event, data []byte) (*corev1.Event, error) {
	return s.write(func(ctx context.Context) (*corev1.Event, error) {
		return s.api.PatchEvent(ctx, e, data)
	})
}

func (s *sink) write(call func(context.Context) (*corev1.Event, error)) (*corev1.Event, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	e, err := call(ctx)
	result := "ok"
	if err != nil {
		result = "error"
	}
	s.writes.WithLabelValues(result).Inc()
	return e, err
}
