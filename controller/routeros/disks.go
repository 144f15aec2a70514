package routeros

import (
	"context"
	"fmt"
	"path"
)

// Runner runs one RouterOS command and returns what it printed. *Client is
// the production Runner.
type Runner interface {
	Run(ctx context.Context, cmd Command) (string, error)
}

// Disks is the RDS disk and file API the controller uses: each method is one
// command (one SSH round trip) plus parsing.
type Disks struct {
	run Runner
}

// NewDisks returns the disk API over r.
func NewDisks(r Runner) *Disks { return &Disks{run: r} }

// Get returns the disk in slot, or an *Error of KindNotFound.
func (d *Disks) Get(ctx context.Context, slot string) (Disk, error) {
	cmd, err := DiskPrint(slot)
	if err != nil {
		return Disk{}, err
	}
	disks, err := d.disks(ctx, cmd)
	if err != nil {
		return Disk{}, err
	}
	var found []Disk
	for _, disk := range disks {
		if disk.Slot == slot {
			found = append(found, disk)
		}
	}
	switch len(found) {
	case 0:
		return Disk{}, &Error{Kind: KindNotFound, Command: cmd.Kind(), Err: fmt.Errorf("no disk in slot %q", slot)}
	case 1:
		return found[0], nil
	default:
		// Slots are unique on RouterOS; two answers mean we misread the output,
		// and acting on a guess could resize or remove the wrong disk.
		return Disk{}, &Error{Kind: KindInternal, Command: cmd.Kind(), Err: fmt.Errorf("%d disks reported for slot %q", len(found), slot)}
	}
}

// List returns every disk.
func (d *Disks) List(ctx context.Context) ([]Disk, error) {
	return d.disks(ctx, DiskList())
}

// Create adds an exported file disk.
func (d *Disks) Create(ctx context.Context, spec DiskSpec) error {
	cmd, err := DiskAdd(spec)
	if err != nil {
		return err
	}
	_, err = d.run.Run(ctx, cmd)
	return err
}

// Resize sets the disk's file size.
func (d *Disks) Resize(ctx context.Context, slot string, size int64) error {
	cmd, err := DiskSetSize(slot, size)
	if err != nil {
		return err
	}
	_, err = d.run.Run(ctx, cmd)
	return err
}

// SetAllowedHosts sets the host NQNs the disk's export admits.
func (d *Disks) SetAllowedHosts(ctx context.Context, slot string, hosts []string) error {
	cmd, err := DiskSetAllowedHosts(slot, hosts)
	if err != nil {
		return err
	}
	_, err = d.run.Run(ctx, cmd)
	return err
}

// Remove removes the disk in slot; its backing file stays (RouterOS keeps it).
func (d *Disks) Remove(ctx context.Context, slot string) error {
	cmd, err := DiskRemove(slot)
	if err != nil {
		return err
	}
	_, err = d.run.Run(ctx, cmd)
	return err
}

// FilesNamed returns the files whose base name is exactly name, wherever
// they are. The RouterOS query is a substring match on the slot; the exact
// comparison happens here.
func (d *Disks) FilesNamed(ctx context.Context, slot, name string) ([]File, error) {
	all, err := d.FilesWith(ctx, slot)
	if err != nil {
		return nil, err
	}
	var files []File
	for _, f := range all {
		if path.Base(f.Name) == name {
			files = append(files, f)
		}
	}
	return files, nil
}

// RemoveFile deletes the file at the absolute path p.
func (d *Disks) RemoveFile(ctx context.Context, p string) error {
	cmd, err := FileRemove(p)
	if err != nil {
		return err
	}
	_, err = d.run.Run(ctx, cmd)
	return err
}

// Pool returns the capacity of the pool mounted at mountPoint.
func (d *Disks) Pool(ctx context.Context, mountPoint string) (Pool, error) {
	cmd, err := PoolPrint(mountPoint)
	if err != nil {
		return Pool{}, err
	}
	records, err := d.records(ctx, cmd)
	if err != nil {
		return Pool{}, err
	}
	if len(records) != 1 {
		return Pool{}, &Error{Kind: KindNotFound, Command: cmd.Kind(), Err: fmt.Errorf("%d disks mounted at %q, want 1", len(records), mountPoint)}
	}
	p, err := ParsePool(records[0])
	if err != nil {
		return Pool{}, &Error{Kind: KindInternal, Command: cmd.Kind(), Err: err}
	}
	return p, nil
}

// Ping checks that RouterOS answers.
func (d *Disks) Ping(ctx context.Context) error {
	_, err := d.run.Run(ctx, Identity())
	return err
}

// records runs cmd and parses its print output.
func (d *Disks) records(ctx context.Context, cmd Command) ([]Record, error) {
	out, err := d.run.Run(ctx, cmd)
	if err != nil {
		return nil, err
	}
	records, err := ParseRecords(out)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Command: cmd.Kind(), Err: err}
	}
	return records, nil
}

func (d *Disks) disks(ctx context.Context, cmd Command) ([]Disk, error) {
	records, err := d.records(ctx, cmd)
	if err != nil {
		return nil, err
	}
	disks := make([]Disk, 0, len(records))
	for _, r := range records {
		// Only file disks can be volumes; physical drives, RAID and
		// partitions print other fields and are none of our business.
		if r.Fields["type"] != "file" {
			continue
		}
		disk, err := ParseDisk(r)
		if err != nil {
			return nil, &Error{Kind: KindInternal, Command: cmd.Kind(), Err: err}
		}
		disks = append(disks, disk)
	}
	return disks, nil
}
