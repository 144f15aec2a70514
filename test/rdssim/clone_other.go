//go:build !linux

package rdssim

import (
	"io"
	"os"
)

// cloneFile copies src into the empty dst. Outside Linux the simulator makes
// no attempt at reflinks or sparseness: it is only a development convenience
// there.
func cloneFile(dst, src *os.File) error {
	_, err := io.Copy(dst, src)
	return err
}

// copyData copies [from, to) of src to the same offsets of dst.
func copyData(dst, src *os.File, from, to int64) error {
	_, err := io.Copy(io.NewOffsetWriter(dst, from), io.NewSectionReader(src, from, to-from))
	return err
}
