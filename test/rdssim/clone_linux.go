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
	if err := copyData(dst, src, 0, info.Size()); err != nil {
		return err
	}
	return dst.Truncate(info.Size())
}

// copyData copies the data extents of src in [from, to) to the same offsets
// of dst, skipping holes, so a sparse source stays sparse.
func copyData(dst, src *os.File, from, to int64) error {
	for off := from; off < to; {
		start, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole remains
		}
		if errors.Is(err, unix.EINVAL) {
			// No SEEK_DATA here: copy everything from off.
			return copyRange(dst, src, off, to)
		}
		if err != nil {
			return err
		}
		if start >= to {
			return nil
		}
		end, err := unix.Seek(int(src.Fd()), start, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		end = min(end, to)
		if err := copyRange(dst, src, start, end); err != nil {
			return err
		}
		off = end
	}
	return nil
}

func copyRange(dst, src *os.File, start, end int64) error {
	w := io.NewOffsetWriter(dst, start)
	_, err := io.Copy(w, io.NewSectionReader(src, start, end-start))
	return err
}
