package routeros

import (
	"context"
	"fmt"
	"strings"
)

// CopySpec is a new file disk made as a copy of the disk in From (a
// snapshot, a restore or a clone). A copy with an NQN is exported as its own
// NVMe/TCP subsystem; one without is not exported at all.
type CopySpec struct {
	From     string
	Slot     string
	FilePath string
	NQN      string
	Port     int
}

// Validate checks every field of the spec.
func (s CopySpec) Validate() error {
	if err := ValidateSlot(s.From); err != nil {
		return err
	}
	if err := ValidateNewSlot(s.Slot); err != nil {
		return err
	}
	if err := ValidateFilePath(s.FilePath); err != nil {
		return err
	}
	if s.NQN == "" {
		return nil
	}
	if err := ValidateNQN(s.NQN); err != nil {
		return err
	}
	return ValidatePort(s.Port)
}

// DiskCopy adds a file disk holding a copy of the disk in From, at the
// source's size (growing it is a separate /disk set: whether RouterOS takes
// file-size together with copy-from is unverified). A copy without an NQN is
// explicitly not exported, whatever RouterOS' default.
func DiskCopy(s CopySpec) (Command, error) {
	if err := s.Validate(); err != nil {
		return Command{}, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "/disk add type=file copy-from=[find slot=%s] file-path=%s slot=%s mount-filesystem=no",
		quote(s.From), quote(s.FilePath), quote(s.Slot))
	if s.NQN == "" {
		b.WriteString(" nvme-tcp-export=no")
	} else {
		fmt.Fprintf(&b, " nvme-tcp-export=yes nvme-tcp-server-port=%d nvme-tcp-server-nqn=%s", s.Port, quote(s.NQN))
	}
	return Command{kind: "disk-copy", text: b.String()}, nil
}

// Copy adds a disk copied from another (DiskCopy).
func (d *Disks) Copy(ctx context.Context, spec CopySpec) error {
	cmd, err := DiskCopy(spec)
	if err != nil {
		return err
	}
	_, err = d.run.Run(ctx, cmd)
	return err
}

// FilesWith returns every file whose name contains slot, wherever it is:
// the caller decides which of them it recognises.
func (d *Disks) FilesWith(ctx context.Context, slot string) ([]File, error) {
	cmd, err := FileList(slot)
	if err != nil {
		return nil, err
	}
	records, err := d.records(ctx, cmd)
	if err != nil {
		return nil, err
	}
	files := make([]File, 0, len(records))
	for _, r := range records {
		f, err := ParseFile(r)
		if err != nil {
			return nil, &Error{Kind: KindInternal, Command: cmd.Kind(), Err: err}
		}
		files = append(files, f)
	}
	return files, nil
}
