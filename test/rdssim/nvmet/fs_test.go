package nvmet

import (
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"testing"
)

func TestTheHostFSBehavesAsTheExporterExpects(t *testing.T) {
	var o osFS
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	must(t, o.Mkdir(sub))
	if err := o.WriteFile(filepath.Join(sub, "attr"), []byte("1\n")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("writing a missing attribute: %v, want it not created", err)
	}
	link := filepath.Join(dir, "link")
	must(t, o.Symlink(filepath.Join(dir, "gone"), link))
	if ok, err := o.Exists(link); !ok || err != nil {
		t.Errorf("Exists(dangling link) = %v, %v", ok, err)
	}
	if err := o.Remove(sub); err == nil {
		t.Error("Remove of a directory succeeded; it is for links only")
	}
	names, err := o.ReadDir(dir)
	must(t, err)
	if !slices.Equal(names, []string{"link", "sub"}) {
		t.Errorf("ReadDir = %v", names)
	}
	must(t, o.Remove(link))
	must(t, o.Rmdir(sub))
	if ok, err := o.Exists(sub); ok || err != nil {
		t.Errorf("Exists after Rmdir = %v, %v", ok, err)
	}
}
