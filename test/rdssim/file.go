package rdssim

import (
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
)

// fileEntries lists /file: everything under the state directory's files
// tree, named as RouterOS names files (relative, no leading slash), parents
// before children. The pool's mount point shows as a disk.
func (e *engine) fileEntries() ([]fileEntry, error) {
	root := e.st.filesRoot()
	var entries []fileEntry
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		ent := fileEntry{name: filepath.ToSlash(rel), modified: info.ModTime()}
		switch {
		case d.IsDir() && ent.name == e.st.mountPoint:
			ent.kind = "disk"
		case d.IsDir():
			ent.kind = "directory"
		case d.Type().IsRegular():
			ent.kind, ent.ext, ent.size = "file", path.Ext(ent.name), info.Size()
		default:
			return nil
		}
		entries = append(entries, ent)
		return nil
	})
	return entries, err
}

func (e *engine) fileTable() ([]record, []fileEntry, *cmdError) {
	entries, err := e.fileEntries()
	if err != nil {
		return nil, nil, failf(ErrTextIOFailed, err.Error())
	}
	recs := make([]record, len(entries))
	for i, ent := range entries {
		recs[i] = fileRecord(ent)
	}
	return recs, entries, nil
}

func (e *engine) filePrint(cmd *command, width int) ([]string, *cmdError) {
	conds, err := printConds(cmd)
	if err != nil {
		return nil, err
	}
	recs, _, err := e.fileTable()
	if err != nil {
		return nil, err
	}
	hits, err := match(recs, conds, fileProps)
	if err != nil {
		return nil, err
	}
	return renderRecords(pick(recs, hits), fileLayout, width), nil
}

// fileRemove deletes the matched files. It refuses, before touching
// anything, a file a disk still uses and the pool's mount point; a directory
// goes only when it is empty by the time its turn comes (children are removed
// first), since RouterOS deleting a whole tree is not something to rely on.
func (e *engine) fileRemove(cmd *command) *cmdError {
	conds, rest, err := selector(cmd)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return failf(ErrTextEndOfCommand, rest[0].col)
	}
	recs, entries, err := e.fileTable()
	if err != nil {
		return err
	}
	hits, err := match(recs, conds, fileProps)
	if err != nil {
		return err
	}
	for _, i := range hits {
		switch {
		case entries[i].kind == "disk":
			return fail(ErrTextCannotRemoveFS)
		case entries[i].kind == "file" && e.st.diskByFile("/"+entries[i].name) != nil:
			return fail(ErrTextFileInUse)
		}
	}
	sort.Slice(hits, func(a, b int) bool { return entries[hits[a]].name > entries[hits[b]].name })
	for _, i := range hits {
		p := e.st.hostPath(entries[i].name)
		if entries[i].kind == "directory" {
			if left, _ := os.ReadDir(p); len(left) > 0 {
				return fail(ErrTextDirNotEmpty)
			}
		}
		if err := os.Remove(p); err != nil {
			return failf(ErrTextIOFailed, err.Error())
		}
	}
	return nil
}
