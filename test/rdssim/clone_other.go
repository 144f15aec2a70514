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
