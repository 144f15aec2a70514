package rdssim

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// MaxSlotLen is the longest slot /disk add accepts (RouterOS 7.24 reportedly
// refuses longer ones). Longer slots in a restored state are still served.
const MaxSlotLen = 32

// DefaultPort is the NVMe/TCP port of a disk added without one.
const DefaultPort = 4420

var pathPartRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// diskTable is what /disk print and [find] see: the pool first, then the
// file disks in creation order. disks[i] is nil for the pool.
func (e *engine) diskTable() ([]record, []*diskState, *cmdError) {
	free, err := e.st.free()
	if err != nil {
		return nil, nil, failf(ErrTextIOFailed, err.Error())
	}
	recs := []record{poolRecord(e.st.mountPoint, e.st.poolSize, free)}
	disks := []*diskState{nil}
	for _, d := range e.st.disks {
		recs = append(recs, fileDiskRecord(d))
		disks = append(disks, d)
	}
	return recs, disks, nil
}

// findDisks resolves a [find ...] to disks; pool reports whether the pool
// itself matched.
func (e *engine) findDisks(conds []cond) (found []*diskState, pool bool, err *cmdError) {
	recs, disks, err := e.diskTable()
	if err != nil {
		return nil, false, err
	}
	hits, err := match(recs, conds, diskProps)
	if err != nil {
		return nil, false, err
	}
	for _, i := range hits {
		if disks[i] == nil {
			pool = true
		} else {
			found = append(found, disks[i])
		}
	}
	return found, pool, nil
}

func (e *engine) diskPrint(cmd *command, width int) ([]string, *cmdError) {
	conds, err := printConds(cmd)
	if err != nil {
		return nil, err
	}
	recs, _, err := e.diskTable()
	if err != nil {
		return nil, err
	}
	hits, err := match(recs, conds, diskProps)
	if err != nil {
		return nil, err
	}
	return renderRecords(pick(recs, hits), diskLayout, width), nil
}

var diskAddArgs = []string{
	"type", "file-path", "file-size", "slot", "mount-filesystem", "copy-from",
	"nvme-tcp-export", "nvme-tcp-server-port", "nvme-tcp-server-nqn", "nvme-tcp-server-allow-host-name",
}

func (e *engine) diskAdd(cmd *command) *cmdError {
	a, err := args(cmd.items, diskAddArgs...)
	if err != nil {
		return err
	}
	for _, name := range diskAddArgs {
		if it, ok := a[name]; ok && it.find != nil && name != "copy-from" {
			return failf(ErrTextInvalidValue, name)
		}
	}
	_, copying := a["copy-from"]
	for _, name := range []string{"type", "slot", "file-path", "file-size"} {
		if _, ok := a[name]; !ok && (name != "file-size" || !copying) {
			return failf(ErrTextMissingValue, name)
		}
	}
	d, err := e.newDisk(a)
	if err != nil {
		return err
	}
	var src *diskState
	if copying {
		if src, err = e.copySource(a["copy-from"]); err != nil {
			return err
		}
		if _, sized := a["file-size"]; !sized {
			d.FileSize = src.FileSize
		} else if d.FileSize < src.FileSize {
			return fail(ErrTextCopySmaller)
		}
	}
	if err := e.checkUnique(d); err != nil {
		return err
	}
	free, ferr := e.st.free()
	if ferr != nil {
		return failf(ErrTextIOFailed, ferr.Error())
	}
	if d.FileSize > free {
		return fail(ErrTextNoSpace)
	}

	if src != nil && e.copyDelay > 0 {
		return e.startCopy(src, d)
	}
	var ioErr error
	if src != nil {
		ioErr = e.st.copyFile(src.FilePath, d.FilePath, d.FileSize)
	} else {
		ioErr = e.st.createFile(d.FilePath, d.FileSize)
	}
	if ioErr != nil {
		return failf(ErrTextIOFailed, ioErr.Error())
	}
	if d.Export {
		if err := e.exporter.Export(e.exported(d)); err != nil {
			_ = os.Remove(e.st.hostPath(d.FilePath))
			return failf(ErrTextExportFailed, err.Error())
		}
	}
	d.Seq = e.st.nextSeq
	e.st.nextSeq++
	e.st.disks = append(e.st.disks, d)
	return e.save()
}

// newDisk validates the values of a /disk add, before any state is looked at.
func (e *engine) newDisk(a map[string]item) (*diskState, *cmdError) {
	d := &diskState{MountFilesystem: true, Port: DefaultPort}
	if a["type"].value != "file" {
		return nil, failf(ErrTextInvalidValue, "type")
	}
	d.Slot = a["slot"].value
	if d.Slot == "" {
		return nil, failf(ErrTextInvalidValue, "slot")
	}
	if len(d.Slot) > MaxSlotLen {
		return nil, fail(ErrTextSlotTooLong)
	}
	d.FilePath = a["file-path"].value
	if err := e.checkFilePath(d.FilePath); err != nil {
		return nil, err
	}
	var err *cmdError
	if it, ok := a["file-size"]; ok {
		if d.FileSize, err = parseSize(it); err != nil {
			return nil, err
		}
	}
	if it, ok := a["mount-filesystem"]; ok {
		if d.MountFilesystem, err = parseYesNo(it); err != nil {
			return nil, err
		}
	}
	if it, ok := a["nvme-tcp-export"]; ok {
		if d.Export, err = parseYesNo(it); err != nil {
			return nil, err
		}
	}
	if it, ok := a["nvme-tcp-server-port"]; ok {
		if d.Port, err = parsePort(it); err != nil {
			return nil, err
		}
	}
	d.NQN = a["nvme-tcp-server-nqn"].value
	d.AllowHostName = a["nvme-tcp-server-allow-host-name"].value
	if d.Export && d.NQN == "" {
		return nil, fail(ErrTextNQNRequired)
	}
	return d, nil
}

// checkFilePath accepts absolute paths of plain parts inside the pool. The
// value must name a file below the mount point, not the mount point itself.
func (e *engine) checkFilePath(p string) *cmdError {
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	if !strings.HasPrefix(p, "/") || len(p) > 255 {
		return failf(ErrTextInvalidValue, "file-path")
	}
	for _, part := range parts {
		if !pathPartRE.MatchString(part) || part == "." || part == ".." {
			return failf(ErrTextInvalidValue, "file-path")
		}
	}
	if len(parts) < 2 || parts[0] != e.st.mountPoint {
		return fail(ErrTextBadFilePath)
	}
	return nil
}

func (e *engine) copySource(it item) (*diskState, *cmdError) {
	if it.find == nil {
		return nil, failf(ErrTextInvalidValue, "copy-from")
	}
	found, pool, err := e.findDisks(it.find)
	if err != nil {
		return nil, err
	}
	switch {
	case pool:
		return nil, fail(ErrTextNotFileDisk)
	case len(found) == 0:
		return nil, fail(ErrTextNoSuchItem)
	case len(found) > 1:
		return nil, failf(ErrTextInvalidValue, "copy-from")
	case found[0].Copying:
		return nil, failf(ErrTextNotSimulated, "copying a disk that is itself being copied")
	}
	return found[0], nil
}

// checkUnique refuses a slot, file or NQN another disk already has. A file
// already on the pool is refused too, even with no disk on it: reusing it
// would hand an old volume's data to a new one.
func (e *engine) checkUnique(d *diskState) *cmdError {
	if d.Slot == e.st.mountPoint || e.st.diskBySlot(d.Slot) != nil {
		return fail(ErrTextSlotExists)
	}
	if e.st.diskByFile(d.FilePath) != nil {
		return fail(ErrTextFileExists)
	}
	if _, err := os.Lstat(e.st.hostPath(d.FilePath)); !errors.Is(err, fs.ErrNotExist) {
		return fail(ErrTextFileExists)
	}
	if d.NQN != "" {
		for _, o := range e.st.disks {
			if o.NQN == d.NQN {
				return fail(ErrTextNQNExists)
			}
		}
	}
	return nil
}

func (e *engine) diskSet(cmd *command) *cmdError {
	conds, rest, err := selector(cmd)
	if err != nil {
		return err
	}
	a, err := args(rest, "file-size", "nvme-tcp-export", "nvme-tcp-server-allow-host-name")
	if err != nil {
		return err
	}
	for _, it := range a {
		if it.find != nil {
			return failf(ErrTextInvalidValue, it.name)
		}
	}
	found, pool, err := e.findDisks(conds)
	if err != nil {
		return err
	}
	if pool {
		return fail(ErrTextNotFileDisk)
	}
	if len(found) == 0 {
		return fail(ErrTextNoSuchItem)
	}
	var size int64
	if it, ok := a["file-size"]; ok {
		if size, err = parseSize(it); err != nil {
			return err
		}
		if err := e.checkGrowth(found, size); err != nil {
			return err
		}
	}
	export, setExport := false, false
	if it, ok := a["nvme-tcp-export"]; ok {
		if export, err = parseYesNo(it); err != nil {
			return err
		}
		setExport = true
	}
	host, setHost := a["nvme-tcp-server-allow-host-name"]
	for _, d := range found {
		if setExport && export && d.NQN == "" {
			return fail(ErrTextNQNRequired)
		}
		if d.Copying {
			return failf(ErrTextNotSimulated, "changing a disk while it is being copied")
		}
	}
	for _, d := range found {
		if err := e.setDisk(d, size, setExport, export, setHost, host.value); err != nil {
			return err
		}
	}
	return e.save()
}

func (e *engine) checkGrowth(found []*diskState, size int64) *cmdError {
	free, ferr := e.st.free()
	if ferr != nil {
		return failf(ErrTextIOFailed, ferr.Error())
	}
	var growth int64
	for _, d := range found {
		growth += size - d.FileSize
	}
	if growth > free {
		return fail(ErrTextNoSpace)
	}
	return nil
}

// setDisk applies one disk's changes and tells the exporter what changed.
// size 0 leaves the size alone.
func (e *engine) setDisk(d *diskState, size int64, setExport, export, setHost bool, host string) *cmdError {
	was := d.Export
	resized := size != 0 && size != d.FileSize
	hostChanged := setHost && host != d.AllowHostName
	if resized {
		if err := e.st.resizeFile(d.FilePath, size); err != nil {
			return failf(ErrTextIOFailed, err.Error())
		}
		d.FileSize = size
	}
	if setExport {
		d.Export = export
	}
	if setHost {
		d.AllowHostName = host
	}
	var err error
	switch {
	case was && !d.Export:
		err = e.exporter.Unexport(e.exported(d))
	case d.Export && (!was || hostChanged):
		err = e.exporter.Export(e.exported(d))
	}
	if err == nil && was && d.Export && resized {
		err = e.exporter.Resize(e.exported(d))
	}
	if err != nil {
		return failf(ErrTextExportFailed, err.Error())
	}
	return nil
}

func (e *engine) diskRemove(cmd *command) *cmdError {
	conds, rest, err := selector(cmd)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return failf(ErrTextEndOfCommand, rest[0].col)
	}
	found, pool, err := e.findDisks(conds)
	if err != nil {
		return err
	}
	if pool {
		return fail(ErrTextCannotRemove)
	}
	for _, d := range found {
		// A copy in progress stops where it is (its goroutine finds the
		// disk gone); it was never exported.
		if d.Export && !d.Copying {
			if err := e.exporter.Unexport(e.exported(d)); err != nil {
				return failf(ErrTextExportFailed, err.Error())
			}
		}
		// The backing file stays, as on RouterOS.
		e.st.disks = slices.DeleteFunc(e.st.disks, func(x *diskState) bool { return x == d })
	}
	if len(found) == 0 {
		return nil
	}
	return e.save()
}

// diskMonitor prints a disk's traffic: once, or every second until the
// session ends (which is what RouterOS does without "once").
func (e *engine) diskMonitor(ctx context.Context, cmd *command, emit func([]string)) *cmdError {
	if len(cmd.items) == 0 {
		return failf(ErrTextMissingValue, "numbers")
	}
	target := cmd.items[0]
	if target.kind != itemWord && target.kind != itemValue {
		return failf(ErrTextSyntax, target.col)
	}
	slot := target.name
	if target.kind == itemValue {
		slot = target.value
	}
	once := false
	for _, it := range cmd.items[1:] {
		if it.kind != itemWord || it.name != "once" || once {
			return failf(ErrTextEndOfCommand, it.col)
		}
		once = true
	}
	for {
		e.mu.Lock()
		d := e.st.diskBySlot(slot)
		e.mu.Unlock()
		if d == nil {
			return fail(ErrTextNoSuchItem)
		}
		// No simulated traffic: the rates are zero until an exporter
		// reports real ones.
		emit(renderMonitor([][2]string{
			{"slot", slot},
			{"read-ops-per-second", "0"},
			{"write-ops-per-second", "0"},
			{"read-rate", formatRate(0)},
			{"write-rate", formatRate(0)},
		}))
		if once {
			return nil
		}
		emit([]string{""})
		if !sleepCtx(ctx, time.Second) {
			return nil
		}
	}
}

func (e *engine) exported(d *diskState) Disk {
	return Disk{
		Slot: d.Slot, FilePath: d.FilePath, BackingFile: e.st.hostPath(d.FilePath),
		Size: d.FileSize, Port: d.Port, NQN: d.NQN, AllowHostName: d.AllowHostName,
	}
}

func (e *engine) save() *cmdError {
	if err := e.st.save(); err != nil {
		return failf(ErrTextIOFailed, err.Error())
	}
	return nil
}
