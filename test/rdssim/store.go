package rdssim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// diskState is one file disk as persisted. The backing file lives at
// StateDir/files/<FilePath without its leading slash>.
type diskState struct {
	Seq             int    `json:"seq"`
	Slot            string `json:"slot"`
	FilePath        string `json:"filePath"`
	FileSize        int64  `json:"fileSize"`
	MountFilesystem bool   `json:"mountFilesystem"`
	Export          bool   `json:"export"`
	Port            int    `json:"port"`
	NQN             string `json:"nqn"`
	AllowHostName   string `json:"allowHostName"`
	// Copying marks a copy-from still running in the background: FileSize
	// is what has been copied so far.
	Copying bool `json:"copying,omitempty"`
}

type persisted struct {
	NextSeq int          `json:"nextSeq"`
	Disks   []*diskState `json:"disks"`
}

// store holds the disks and the pool. It is not safe for concurrent use:
// the simulator runs one command at a time, as the RDS does.
type store struct {
	dir        string
	mountPoint string
	poolSize   int64
	nextSeq    int
	disks      []*diskState // in creation order, which is print order
}

const stateFile = "state.json"

func openStore(dir, mountPoint string, poolSize int64) (*store, error) {
	s := &store{dir: dir, mountPoint: mountPoint, poolSize: poolSize}
	if err := os.MkdirAll(s.poolDir(), 0o755); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	var p persisted
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("read %s: %w", stateFile, err)
	}
	s.nextSeq, s.disks = p.NextSeq, p.Disks
	return s, nil
}

// save writes the state through a rename so a crash never leaves half a file.
func (s *store) save() error {
	data, err := json.MarshalIndent(persisted{NextSeq: s.nextSeq, Disks: s.disks}, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(s.dir, stateFile))
}

func (s *store) filesRoot() string { return filepath.Join(s.dir, "files") }

func (s *store) poolDir() string { return filepath.Join(s.filesRoot(), s.mountPoint) }

// hostPath maps a RouterOS path ("/storage-pool/x.img" or the /file name
// "storage-pool/x.img") to the real file under the state directory.
func (s *store) hostPath(routerPath string) string {
	return filepath.Join(s.filesRoot(), filepath.FromSlash(strings.TrimPrefix(routerPath, "/")))
}

func (s *store) diskBySlot(slot string) *diskState {
	for _, d := range s.disks {
		if d.Slot == slot {
			return d
		}
	}
	return nil
}

func (s *store) diskByFile(routerPath string) *diskState {
	for _, d := range s.disks {
		if d.FilePath == routerPath {
			return d
		}
	}
	return nil
}

// used is the apparent size of every regular file in the pool. Files left
// behind by /disk remove count too: on the RDS they still hold their space.
func (s *store) used() (int64, error) {
	var total int64
	err := filepath.WalkDir(s.poolDir(), func(_ string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		total += info.Size()
		return nil
	})
	return total, err
}

func (s *store) free() (int64, error) {
	used, err := s.used()
	if err != nil {
		return 0, err
	}
	return max(s.poolSize-used, 0), nil
}

// createFile makes a new sparse backing file; it never reuses an existing one.
func (s *store) createFile(routerPath string, size int64) error {
	p := s.hostPath(routerPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		_ = f.Close()
		_ = os.Remove(p)
		return err
	}
	return f.Close()
}

// copyFile makes dst a copy of src, then sizes it to size (never smaller).
func (s *store) copyFile(srcPath, dstPath string, size int64) (err error) {
	src, err := os.Open(s.hostPath(srcPath))
	if err != nil {
		return err
	}
	defer func() { _ = src.Close() }()
	p := s.hostPath(dstPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	dst, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(p)
		}
	}()
	if err := cloneFile(dst, src); err != nil {
		return err
	}
	return dst.Truncate(size)
}

func (s *store) resizeFile(routerPath string, size int64) error {
	return os.Truncate(s.hostPath(routerPath), size)
}
