package eventstest

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

// Claim is a PVC with only what an Event needs of it.
func Claim(namespace, name string, uid types.UID) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: uid}}
}

// EventsIn reads a fake clientset's events through its tracker, so that
// the test's own reads are not among the client's recorded actions.
func EventsIn(t testing.TB, client *fake.Clientset, namespace string) []corev1.Event {
	t.Helper()
	obj, err := client.Tracker().List(schema.GroupVersionResource{Version: "v1", Resource: "events"}, schema.GroupVersionKind{Version: "v1", Kind: "Event"}, namespace)
	if err != nil {
		t.Fatal(err)
	}
	return obj.(*corev1.EventList).Items
}
