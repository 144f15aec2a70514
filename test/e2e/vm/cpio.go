package vm

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// cpioWriter writes the "newc" cpio format the kernel unpacks an initramfs
// from: a 110-byte ASCII header per entry, the name, the data, each padded
// to 4 bytes, and a TRAILER!!! entry. Writing it here saves depending on
// the cpio package and keeps every mode and owner exactly as intended.
type cpioWriter struct {
	w   *bufio.Writer
	off int64
	ino uint32
	err error
}

func newCPIOWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: bufio.NewWriterSize(w, 1<<20)} }

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.off += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.off % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// header writes an entry's header and name; size bytes of data must follow.
func (c *cpioWriter) header(name string, mode uint32, size int64) {
	c.ino++
	nlink := 1
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	// Fields: magic, ino, mode, uid, gid, nlink, mtime, filesize,
	// devmajor, devminor, rdevmajor, rdevminor, namesize, check. The mtime
	// is 0 so that the same inputs give the same archive.
	c.write(fmt.Appendf(nil, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0))
	c.write(append([]byte(name), 0))
	c.pad()
}

func (c *cpioWriter) addDir(name string, perm fs.FileMode) {
	c.header(name, 0o040000|uint32(perm.Perm()), 0)
}

func (c *cpioWriter) addSymlink(name, target string) {
	c.header(name, 0o120000|0o777, int64(len(target)))
	c.write([]byte(target))
	c.pad()
}

func (c *cpioWriter) addFile(name string, perm fs.FileMode, src string) {
	if c.err != nil {
		return
	}
	f, err := os.Open(src)
	if err != nil {
		c.err = err
		return
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		c.err = err
		return
	}
	c.header(name, 0o100000|uint32(perm.Perm()), st.Size())
	if c.err != nil {
		return
	}
	n, err := io.Copy(c.w, f)
	c.off += n
	if err == nil && n != st.Size() {
		err = fmt.Errorf("%s changed size while archived", src)
	}
	c.err = err
	c.pad()
}

// close writes the trailer and flushes.
func (c *cpioWriter) close() error {
	c.header("TRAILER!!!", 0, 0)
	if c.err != nil {
		return c.err
	}
	return c.w.Flush()
}

// writeTree archives every entry below dir. WalkDir visits a directory
// before what it holds, which the kernel's unpacker needs: it does not
// create missing parents.
func writeTree(c *cpioWriter, dir string) error {
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			c.addDir(rel, info.Mode())
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			c.addSymlink(rel, target)
		case info.Mode().IsRegular():
			c.addFile(rel, info.Mode(), p)
		default:
			return fmt.Errorf("%s: cannot archive a %s", p, info.Mode().Type())
		}
		return c.err
	})
	if err != nil {
		return err
	}
	return c.close()
}
