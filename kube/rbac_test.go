package kube

import (
	"bufio"
	"bytes"
	"os"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/rds-csi/rds-csi/kube/events"
	"github.com/rds-csi/rds-csi/kube/events/eventstest"
)

const agentRBAC = "../deploy/kubernetes/rbac-agent.yaml"

// TestTheAgentRBACGrantsExactlyWhatTheRecorderUses decodes the agent's
// manifest and checks its rules twice: against the list written here, and
// against the calls the recorder really makes (seen by a fake API), so that
// neither a missing nor a superfluous permission goes unnoticed.
func TestTheAgentRBACGrantsExactlyWhatTheRecorderUses(t *testing.T) {
	sa, role, binding := decodeRBAC(t, agentRBAC)
	if sa.Name != "rds-csi-agent" || sa.Namespace != "rds-csi" {
		t.Errorf("service account %s/%s, want rds-csi/rds-csi-agent", sa.Namespace, sa.Name)
	}
	wantRules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
	}
	if !reflect.DeepEqual(role.Rules, wantRules) {
		t.Errorf("rules %+v, want exactly %+v", role.Rules, wantRules)
	}
	wantSubject := rbacv1.Subject{Kind: "ServiceAccount", Name: sa.Name, Namespace: sa.Namespace}
	if len(binding.Subjects) != 1 || binding.Subjects[0] != wantSubject {
		t.Errorf("binding subjects %+v, want %+v", binding.Subjects, wantSubject)
	}
	if binding.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name}) {
		t.Errorf("binding refers to %+v, not the ClusterRole %s", binding.RoleRef, role.Name)
	}

	// The recorder at work, on the REST client the agent uses: an event,
	// and the same again, which client-go aggregates into a patch of the
	// first.
	srv := eventstest.NewServer(t, corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "data", UID: "uid-1"}})
	api, err := events.NewAPI(srv.Config())
	if err != nil {
		t.Fatal(err)
	}
	r := events.NewRecorder(api, "rds-csi-agent", "node-1", prometheus.NewRegistry())
	t.Cleanup(r.Shutdown)
	r.PVC("team-a", "data", corev1.EventTypeWarning, "VolumeLost", "x")
	r.PVC("team-a", "data", corev1.EventTypeWarning, "VolumeLost", "x")
	deadline := time.Now().Add(10 * time.Second)
	for evs := srv.Events("team-a"); len(evs) != 1 || evs[0].Count != 2; evs = srv.Events("team-a") {
		if time.Now().After(deadline) {
			t.Fatalf("the repeated event was not counted: %+v", evs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	used := map[string]bool{}
	for _, c := range srv.Calls() {
		// The core group is "" in RBAC.
		used["/"+c.Resource+":"+c.Verb] = true
	}
	if granted := grants(role); !reflect.DeepEqual(used, granted) {
		t.Errorf("the recorder called %v; the ClusterRole grants %v", keys(used), keys(granted))
	}
}

const controllerRBAC = "../deploy/kubernetes/rbac-controller.yaml"

// TestTheControllerRBACGrantsExactlyWhatTheWatcherUses checks the
// controller's manifest like the agent's: against the calls the watcher and
// its recorder really make on a fake API — the informers' lists and watches,
// a PV annotation, and an Event that repeats.
func TestTheControllerRBACGrantsExactlyWhatTheWatcherUses(t *testing.T) {
	sa, role, binding := decodeRBAC(t, controllerRBAC)
	if sa.Name != "rds-csi-controller" || sa.Namespace != "rds-csi" {
		t.Errorf("service account %s/%s, want rds-csi/rds-csi-controller", sa.Namespace, sa.Name)
	}
	wantSubject := rbacv1.Subject{Kind: "ServiceAccount", Name: sa.Name, Namespace: sa.Namespace}
	if len(binding.Subjects) != 1 || binding.Subjects[0] != wantSubject {
		t.Errorf("binding subjects %+v, want %+v", binding.Subjects, wantSubject)
	}
	if binding.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name}) {
		t.Errorf("binding refers to %+v, not the ClusterRole %s", binding.RoleRef, role.Name)
	}

	client := fake.NewClientset(pvOf("pv-1", "vol-1", testDriver, "team-a", "data"), eventstest.Claim("team-a", "data", "uid-1"), node("node-1"))
	w := startWatcher(t, client)
	if err := w.Annotate(t.Context(), "vol-1", []string{"node-1"}); err != nil {
		t.Fatal(err)
	}
	w.Event("vol-1", corev1.EventTypeNormal, "VolumeAttached", "x")
	w.Event("vol-1", corev1.EventTypeNormal, "VolumeAttached", "x")
	waitFor(t, "the repeated event to be counted", func() bool {
		evs := eventstest.EventsIn(t, client, "team-a")
		return len(evs) == 1 && evs[0].Count == 2
	})
	used := map[string]bool{}
	for _, a := range client.Actions() {
		used[a.GetResource().Group+"/"+a.GetResource().Resource+":"+a.GetVerb()] = true
	}
	if granted := grants(role); !reflect.DeepEqual(used, granted) {
		t.Errorf("the controller called %v; the ClusterRole grants %v", keys(used), keys(granted))
	}
}

// grants returns the group/resource:verb set a role grants.
func grants(role *rbacv1.ClusterRole) map[string]bool {
	granted := map[string]bool{}
	for _, rule := range role.Rules {
		for _, g := range rule.APIGroups {
			for _, res := range rule.Resources {
				for _, v := range rule.Verbs {
					granted[g+"/"+res+":"+v] = true
				}
			}
		}
	}
	return granted
}

func decodeRBAC(t *testing.T, path string) (*corev1.ServiceAccount, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		sa      *corev1.ServiceAccount
		role    *rbacv1.ClusterRole
		binding *rbacv1.ClusterRoleBinding
	)
	docs := yaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := docs.Read()
		if err != nil {
			break // io.EOF; a read error would show as missing objects below
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			sa = o
		case *rbacv1.ClusterRole:
			role = o
		case *rbacv1.ClusterRoleBinding:
			binding = o
		default:
			t.Errorf("%s: unexpected %T", path, obj)
		}
	}
	if sa == nil || role == nil || binding == nil {
		t.Fatalf("%s: want a ServiceAccount, a ClusterRole and a ClusterRoleBinding", path)
	}
	return sa, role, binding
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
