package agent

import (
	"context"
	"path/filepath"

	"github.com/rds-csi/rds-csi/kernel/mount"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
)

// Mounter is the agent's view of the mount table and the mount syscalls.
type Mounter interface {
	List() ([]mount.Entry, error)
	Mount(ctx context.Context, source, target, fstype string, options []string) error
	BindMount(ctx context.Context, source, target string, readOnly bool) error
	Unmount(ctx context.Context, target string) error
}

// HostMounter is the Mounter of the agent's own mount namespace.
type HostMounter struct{}

// List returns the mount table.
func (HostMounter) List() ([]mount.Entry, error) { return mount.List() }

// Mount mounts a filesystem.
func (HostMounter) Mount(ctx context.Context, source, target, fstype string, options []string) error {
	return mount.Mount(ctx, source, target, fstype, options)
}

// BindMount bind-mounts source at target.
func (HostMounter) BindMount(ctx context.Context, source, target string, readOnly bool) error {
	return mount.BindMount(ctx, source, target, readOnly)
}

// Unmount unmounts the top mount at target.
func (HostMounter) Unmount(ctx context.Context, target string) error {
	return mount.Unmount(ctx, target)
}

// mountedAt returns the visible (most recent) mount at path.
func mountedAt(mounts []mount.Entry, path string) (mount.Entry, bool) {
	path = filepath.Clean(path)
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i].MountPoint == path {
			return mounts[i], true
		}
	}
	return mount.Entry{}, false
}

func devOf(m mount.Entry) sysfs.DevT { return sysfs.DevT{Major: m.Dev.Major, Minor: m.Dev.Minor} }
