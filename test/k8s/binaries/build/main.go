// Command build builds (or finds in the cache) the control plane and the CSI
// sidecars of the test bed, and helm and kustomize for the deployment tests:
// `make k8s-binaries`. The tests do the same on
// their own; this is for warming a cache ahead of them.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/rds-csi/rds-csi/test/k8s/binaries"
)

func main() {
	log.SetFlags(log.Ltime)
	if os.Getenv("RDS_CSI_K8S") == "skip" {
		fmt.Println("SKIP: not building the control-plane test bed: RDS_CSI_K8S=skip")
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	root, err := binaries.RepoRoot(ctx)
	if err != nil {
		log.Fatal(err)
	}
	modules, err := binaries.Kubernetes(root)
	if err != nil {
		log.Fatal(err)
	}
	modules = append(modules, binaries.Packaging(root)...)
	set, err := binaries.Ensure(ctx, binaries.Config{CacheDir: binaries.CacheDir(), Logf: log.Printf}, modules...)
	if err != nil {
		log.Fatal(err)
	}
	names := make([]string, 0, len(set))
	for name := range set {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Println(set[name])
	}
}
