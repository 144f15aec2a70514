SHELL := /bin/bash
# rds-csi — see README.md. Every target installs nothing global except the
# pinned golangci-lint into $(GOBIN).
GO        ?= go
GOBIN     ?= $(shell $(GO) env GOPATH)/bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BINARIES  := rds-csi-controller rds-csi-agent rds-sim
GOLANGCI_LINT_VERSION := v2.15.0
# Seconds each fuzz target runs in `make fuzz` (seeds always run in `make test`).
FUZZTIME  ?= 30s

.PHONY: all build test unit sanity k8s k8s-binaries e2e fuzz lint demo bench clean

all: build

build:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ $(addprefix ./cmd/,$(BINARIES))

# Unit tests (fuzz seeds included: they run as ordinary tests) with the race
# detector, then csi-sanity against the real controller talking SSH to the
# simulator, the control-plane test bed, and the VM tests.
test: unit sanity k8s e2e

unit:
	$(GO) test -race -count=1 $(shell $(GO) list ./... | grep -v -e /test/sanity -e '/test/e2e$$' -e '/test/k8s$$')
	$(GO) test -race -count=1 -tags faultinject ./internal/fault/

# -v so that Ginkgo's summary (how many specs ran, how many were skipped)
# is in the log.
sanity:
	$(GO) test -race -count=1 -v ./test/sanity/...

# The control-plane test bed (docs/testing.md): etcd, kube-apiserver,
# kube-controller-manager, csi-provisioner and csi-attacher built from their
# modules into RDS_CSI_K8S_CACHE (default /var/cache/rds-csi-k8s): about
# 10-16 min cold on 2 cores, seconds when cached. The build runs on its own
# first so that its progress lines stream.
k8s: k8s-binaries
	$(GO) test -race -count=1 -v -timeout 30m ./test/k8s/

k8s-binaries:
	$(GO) run ./test/k8s/binaries/build

# The VM end-to-end tests: real Debian kernels under qemu (docs/testing.md).
e2e:
	$(GO) test -count=1 -v -timeout 60m ./test/e2e/

fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzParseRecords -fuzztime=$(FUZZTIME) ./controller/routeros/
	$(GO) test -run='^$$' -fuzz=FuzzParseBytes -fuzztime=$(FUZZTIME) ./controller/routeros/
	$(GO) test -run='^$$' -fuzz=FuzzDiskRoundTrip -fuzztime=$(FUZZTIME) ./controller/routeros/
	$(GO) test -run='^$$' -fuzz=FuzzCommandsCannotBeInjected -fuzztime=$(FUZZTIME) ./controller/routeros/
	$(GO) test -run='^$$' -fuzz=FuzzDiskCopyCannotBeInjected -fuzztime=$(FUZZTIME) ./controller/routeros/
	$(GO) test -run='^$$' -fuzz=FuzzParseSnapshotFile -fuzztime=$(FUZZTIME) ./controller/

$(GOBIN)/golangci-lint:
	$(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

lint: $(GOBIN)/golangci-lint
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet ./...
	$(GOBIN)/golangci-lint run ./...

# The controller on the host, then the whole driver in the VM test bed
# (a note and no failure where the VM cannot run: not root, no apt).
demo: build
	$(GO) run ./test/demo -bin bin
	$(GO) run ./test/demo/vm

# The controller's benchmark and the agent's idle scan on the host (three
# runs each), then the node's in the VM test bed on both kernels (one boot
# each; every latency is sampled five times in the guest).
# docs/benchmarks.md records the results.
bench:
	set -o pipefail; $(GO) test -run='^$$' -bench=. -benchtime=1x -count=3 ./test/bench/ | tee /tmp/rds-csi-bench.txt
	set -o pipefail; $(GO) test -run='^$$' -bench=. -benchtime=2s -count=3 ./agent/heal/ | tee /tmp/rds-csi-bench-scan.txt
	set -o pipefail; $(GO) test -run='^$$' -bench=. -benchtime=1x -count=1 -timeout=150m ./test/bench/node/ | tee /tmp/rds-csi-bench-node.txt

clean:
	rm -rf bin
