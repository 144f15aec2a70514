// Package vm is the host side of the real-kernel test bed: it prepares the
// tools and the Debian kernels, packs a guest test binary into an initramfs,
// boots it under qemu and turns the guest's `go test -v` output back into
// results. docs/testing.md describes the whole bed.
package vm
