package rdssim

import (
	"os"
	"time"

	"k8s.io/klog/v2"
)

// copySteps is how many pieces a background copy is made in: the disk's
// size= grows after each.
const copySteps = 10

// startCopy adds d as a copy of src that completes in the background over
// about e.copyDelay: a live, non-atomic copy of the source as it is during
// that time (what a copy-from of an in-use volume may well be on the RDS).
// Until it completes the disk shows the bytes copied so far as its size and
// is not exported; RouterOS prints no progress field, so a growing size is
// the only sign of a copy in progress the simulator gives (docs/routeros.md).
// Called with e.mu held.
func (e *engine) startCopy(src, d *diskState) *cmdError {
	srcFile, err := os.Open(e.st.hostPath(src.FilePath))
	if err != nil {
		return failf(ErrTextIOFailed, err.Error())
	}
	if err := e.st.createFile(d.FilePath, 0); err != nil {
		_ = srcFile.Close()
		return failf(ErrTextIOFailed, err.Error())
	}
	final := d.FileSize
	d.FileSize, d.Copying = 0, true
	d.Seq = e.st.nextSeq
	e.st.nextSeq++
	e.st.disks = append(e.st.disks, d)
	if err := e.save(); err != nil {
		_ = srcFile.Close()
		return err
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer func() { _ = srcFile.Close() }()
		e.copyInBackground(srcFile, d, final)
	}()
	return nil
}

func (e *engine) copyInBackground(src *os.File, d *diskState, final int64) {
	info, err := src.Stat()
	if err != nil {
		klog.ErrorS(err, "Background copy failed", "slot", d.Slot)
		return
	}
	srcSize := info.Size()
	for step := int64(1); step <= copySteps; step++ {
		if !sleepCtx(e.ctx, e.copyDelay/copySteps) {
			return
		}
		done := final * step / copySteps
		if err := e.copyStep(src, d, min(final*(step-1)/copySteps, srcSize), min(done, srcSize), done, step == copySteps); err != nil {
			klog.ErrorS(err, "Background copy failed", "slot", d.Slot)
			return
		}
	}
}

// copyStep copies [from, to) of the source and grows the copy to size, unless
// the disk was removed meanwhile. The last step exports the copy if asked.
func (e *engine) copyStep(src *os.File, d *diskState, from, to, size int64, last bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.st.diskBySlot(d.Slot) != d {
		return nil
	}
	dst, err := os.OpenFile(e.st.hostPath(d.FilePath), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer func() { _ = dst.Close() }()
	if err := copyData(dst, src, from, to); err != nil {
		return err
	}
	if err := dst.Truncate(size); err != nil {
		return err
	}
	d.FileSize = size
	if last {
		d.Copying = false
		if d.Export {
			if err := e.exporter.Export(e.exported(d)); err != nil {
				return err
			}
		}
	}
	if err := e.st.save(); err != nil {
		return err
	}
	return nil
}

// SetCopyDelay changes Config.CopyDelay for the copies started from now on.
func (s *Sim) SetCopyDelay(d time.Duration) {
	s.eng.mu.Lock()
	defer s.eng.mu.Unlock()
	s.eng.copyDelay = d
}
