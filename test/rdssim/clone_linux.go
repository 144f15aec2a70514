package rdssim

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// cloneFile copies src into the empty dst the cheapest real way: a reflink
// where the filesystem shares extents (Btrfs, XFS: what copy-from on a Btrfs
// pool would be), otherwise only the data extents, so a sparse source stays
// sparse and a large empty image copies in no time.
func cloneFile(dst, src *os.File) error {
	if unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())) == nil {
		return nil
	}
	info, err := src.Stat()
	if err != nil {
		return err
	}
	size := info.Size()
	for off := int64(0); off < size; {
		start, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if errors.Is(err, unix.EINVAL) {
			// No SEEK_DATA here: copy everything from off.
			return copyRange(dst, src, off, size)
		}
		if err != nil {
			return err
		}
		end, err := unix.Seek(int(src.Fd()), start, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		if err := copyRange(dst, src, start, end); err != nil {
			return err
		}
		off = end
	}
	return dst.Truncate(size)
}

func copyRange(dst, src *os.File, start, end int64) error {
	w := io.NewOffsetWriter(dst, start)
	_, err := io.Copy(w, io.NewSectionReader(src, start, end-start))
	return err
}
