package packaging

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8sjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// Object is one decoded manifest document.
type Object struct {
	// Source names the file (and document) it came from.
	Source string
	GVK    schema.GroupVersionKind
	// Typed is the object decoded into its Go type; nil for kinds outside
	// client-go's scheme (checked by CRDFields instead).
	Typed runtime.Object
	// Unstructured is the same document as a map, for comparisons.
	Unstructured *unstructured.Unstructured
}

// Key is "Kind namespace/name" (no namespace for cluster objects).
func (o Object) Key() string {
	if ns := o.Unstructured.GetNamespace(); ns != "" {
		return o.GVK.Kind + " " + ns + "/" + o.Unstructured.GetName()
	}
	return o.GVK.Kind + " " + o.Unstructured.GetName()
}

var strict = k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	k8sjson.SerializerOptions{Yaml: false, Strict: true})

// crdFields are the fields the repository uses of kinds outside client-go's
// scheme, so that a typo in them fails as it would for a built-in kind. A
// kind missing here fails decoding: add its fields.
var crdFields = map[schema.GroupVersionKind]any{
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}:        &serviceMonitor{},
	{Group: "snapshot.storage.k8s.io", Version: "v1", Kind: "VolumeSnapshotClass"}: &volumeSnapshotClass{},
	{Group: "snapshot.storage.k8s.io", Version: "v1", Kind: "VolumeSnapshot"}:      &volumeSnapshot{},
}

type volumeSnapshotClass struct {
	APIVersion     string            `json:"apiVersion"`
	Kind           string            `json:"kind"`
	Metadata       map[string]any    `json:"metadata"`
	Driver         string            `json:"driver"`
	DeletionPolicy string            `json:"deletionPolicy"`
	Parameters     map[string]string `json:"parameters,omitempty"`
}

type volumeSnapshot struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   map[string]any `json:"metadata"`
	Spec       struct {
		VolumeSnapshotClassName string `json:"volumeSnapshotClassName,omitempty"`
		Source                  struct {
			PersistentVolumeClaimName string `json:"persistentVolumeClaimName,omitempty"`
			VolumeSnapshotContentName string `json:"volumeSnapshotContentName,omitempty"`
		} `json:"source"`
	} `json:"spec"`
}

type serviceMonitor struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   map[string]any `json:"metadata"`
	Spec       struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Interval string `json:"interval"`
			Path     string `json:"path,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// Decode splits a multi-document YAML stream and decodes each document
// strictly: unknown fields, duplicate fields and kinds nobody knows fail.
// Empty documents (a template that rendered nothing) are skipped.
func Decode(source string, data []byte) ([]Object, error) {
	var objs []Object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if isEmpty(doc) {
			continue
		}
		src := fmt.Sprintf("%s#%d", source, i)
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		gvk := u.GroupVersionKind()
		o := Object{Source: src, GVK: gvk, Unstructured: u}
		if scheme.Scheme.Recognizes(gvk) {
			typed, _, err := strict.Decode(js, nil, nil)
			if err != nil {
				return nil, fmt.Errorf("%s (%s): %w", src, gvk.Kind, err)
			}
			o.Typed = typed
		} else if v, ok := crdFields[gvk]; ok {
			dec := json.NewDecoder(bytes.NewReader(js))
			dec.DisallowUnknownFields()
			if err := dec.Decode(v); err != nil {
				return nil, fmt.Errorf("%s (%s): %w", src, gvk.Kind, err)
			}
		} else {
			return nil, fmt.Errorf("%s: kind %s is neither in client-go's scheme nor known to test/packaging", src, gvk)
		}
		objs = append(objs, o)
	}
}

// isEmpty reports a document of nothing but comments and blank lines.
func isEmpty(doc []byte) bool {
	for line := range strings.Lines(string(doc)) {
		t := strings.TrimSpace(line)
		if t != "" && t != "---" && !strings.HasPrefix(t, "#") {
			return false
		}
	}
	return true
}
