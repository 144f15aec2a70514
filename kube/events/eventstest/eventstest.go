// Package eventstest is an API server for tests of Event recording: it
// serves PVCs for reading and keeps the Events written to it, over HTTP, so
// that tests run the recorder's real REST client.
package eventstest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/client-go/rest"
)

// Call is one request: the RBAC verb and resource it needs, and what it
// named.
type Call struct {
	Verb, Resource, Namespace, Name string
	// Query is the raw query string; UserAgent the client's.
	Query, UserAgent string
}

// Server is the fake API server.
type Server struct {
	srv *httptest.Server

	mu     sync.Mutex
	pvcs   map[string]corev1.PersistentVolumeClaim // by namespace/name
	events map[string]corev1.Event                 // by namespace/name
	calls  []Call
	serial int
}

var pathRE = regexp.MustCompile(`^/api/v1/namespaces/([^/]+)/(persistentvolumeclaims|events)(?:/([^/]+))?$`)

var verbs = map[string]string{http.MethodGet: "get", http.MethodPost: "create", http.MethodPut: "update", http.MethodPatch: "patch"}

// NewServer serves claims until the test ends.
func NewServer(t *testing.T, claims ...corev1.PersistentVolumeClaim) *Server {
	t.Helper()
	s := &Server{pvcs: map[string]corev1.PersistentVolumeClaim{}, events: map[string]corev1.Event{}}
	for _, c := range claims {
		s.pvcs[c.Namespace+"/"+c.Name] = c
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

// Config is a client configuration for the server.
func (s *Server) Config() *rest.Config { return &rest.Config{Host: s.srv.URL} }

// Calls returns the requests so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Events returns the events of a namespace.
func (s *Server) Events(namespace string) []corev1.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []corev1.Event
	for _, e := range s.events {
		if e.Namespace == namespace {
			out = append(out, e)
		}
	}
	return out
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	m := pathRE.FindStringSubmatch(r.URL.Path)
	verb, known := verbs[r.Method]
	if m == nil || !known {
		http.Error(w, "not served here: "+r.Method+" "+r.URL.Path, http.StatusNotFound)
		return
	}
	ns, resource, name := m[1], m[2], m[3]
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, Call{Verb: verb, Resource: resource, Namespace: ns, Name: name, Query: r.URL.RawQuery, UserAgent: r.UserAgent()})
	var out any
	switch {
	case resource == "persistentvolumeclaims" && verb == "get":
		pvc, ok := s.pvcs[ns+"/"+name]
		if !ok {
			status(w, http.StatusNotFound, "persistentvolumeclaims \""+name+"\" not found")
			return
		}
		pvc.TypeMeta = metav1.TypeMeta{Kind: "PersistentVolumeClaim", APIVersion: "v1"}
		out = pvc
	case resource == "events" && verb == "create":
		var e corev1.Event
		if err := json.Unmarshal(body, &e); err != nil {
			status(w, http.StatusBadRequest, err.Error())
			return
		}
		s.serial++
		e.UID = types.UID(fmt.Sprintf("event-%d", s.serial))
		e.ResourceVersion = fmt.Sprint(s.serial)
		e.TypeMeta = metav1.TypeMeta{Kind: "Event", APIVersion: "v1"}
		s.events[ns+"/"+e.Name] = e
		out = e
	case resource == "events" && verb == "patch":
		e, ok := s.events[ns+"/"+name]
		if !ok {
			status(w, http.StatusNotFound, "events \""+name+"\" not found")
			return
		}
		orig, _ := json.Marshal(e)
		patched, err := strategicpatch.StrategicMergePatch(orig, body, corev1.Event{})
		if err == nil {
			err = json.Unmarshal(patched, &e)
		}
		if err != nil {
			status(w, http.StatusUnprocessableEntity, err.Error())
			return
		}
		s.events[ns+"/"+name] = e
		out = e
	default:
		status(w, http.StatusMethodNotAllowed, verb+" "+resource+" is not served here")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func status(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Message: msg, Code: int32(code),
	})
}
