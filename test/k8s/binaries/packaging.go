package binaries

import "path/filepath"

// The packaging tools, by name.
const (
	Helm      = "helm"
	Kustomize = "kustomize"
)

// Packaging returns the wrapper modules of the tools that render the
// deployment (test/k8s/tools/helm and test/k8s/tools/kustomize): each is
// pinned in its own go.mod, apart from the other and from the test bed, so
// that neither drags the other's Kubernetes libraries to another version.
func Packaging(repoRoot string) []Module {
	tools := filepath.Join(repoRoot, "test", "k8s", "tools")
	return []Module{
		{
			Name:  "helm",
			Dir:   filepath.Join(tools, "helm"),
			Tools: []Tool{{Name: Helm, Package: "helm.sh/helm/v3/cmd/helm", ColdHint: "about 2.5 min on 2 cores"}},
		},
		{
			Name:  "kustomize",
			Dir:   filepath.Join(tools, "kustomize"),
			Tools: []Tool{{Name: Kustomize, Package: "sigs.k8s.io/kustomize/kustomize/v5", ColdHint: "about a minute"}},
		},
	}
}
