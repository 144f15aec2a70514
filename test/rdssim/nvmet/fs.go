package nvmet

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// FS is every filesystem operation the exporter performs, so that tests can
// swap configfs for a fake that enforces its rules. Paths are absolute.
type FS interface {
	// Mkdir creates a configfs item; the kernel fills in its attributes
	// and default groups.
	Mkdir(path string) error
	// Rmdir removes an item. configfs has no recursive delete: the item
	// must hold nothing that was made by hand.
	Rmdir(path string) error
	// WriteFile stores an attribute in one write, which is what configfs
	// hands to the kernel's store function.
	WriteFile(path string, data []byte) error
	ReadFile(path string) ([]byte, error)
	// Symlink makes link point at target; configfs turns it into an
	// association (subsystem into port, host into subsystem).
	Symlink(target, link string) error
	// Remove deletes a symlink made by Symlink.
	Remove(link string) error
	// Exists reports whether path exists, without following a final
	// symlink.
	Exists(path string) (bool, error)
	// ReadDir lists the names in a directory.
	ReadDir(path string) ([]string, error)
}

// osFS is the host's filesystem.
type osFS struct{}

func (osFS) Mkdir(path string) error { return os.Mkdir(path, 0o755) }

func (osFS) Rmdir(path string) error {
	// os.Remove would first try unlink, which on a configfs item fails with
	// a misleading error when rmdir is what was meant.
	if err := syscall.Rmdir(path); err != nil {
		return &fs.PathError{Op: "rmdir", Path: path, Err: err}
	}
	return nil
}

func (osFS) WriteFile(path string, data []byte) error {
	// No O_CREATE: configfs attributes exist or the kernel lacks them, and
	// creating a plain file there is never right. O_TRUNC matches what the
	// shell's ">" does, the form proven on 6.1 and 6.12.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	return errors.Join(werr, f.Close())
}

func (osFS) ReadFile(path string) ([]byte, error) { return os.ReadFile(path) }

func (osFS) Symlink(target, link string) error { return os.Symlink(target, link) }

func (osFS) Remove(link string) error {
	if err := syscall.Unlink(link); err != nil {
		return &fs.PathError{Op: "unlink", Path: link, Err: err}
	}
	return nil
}

func (osFS) Exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, err
	}
}

func (osFS) ReadDir(path string) ([]string, error) {
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names, nil
}
