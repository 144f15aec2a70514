package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/rds-csi/rds-csi/volume"
)

// A snapshot restored (or a volume cloned) into a larger volume carries the
// source's smaller filesystem, and Kubernetes asks for no node expansion:
// staging it grows the filesystem to the device, data intact.
func TestStagingACopyLargerThanItsFilesystemGrowsIt(t *testing.T) {
	for _, fsType := range []string{"ext4", "xfs"} {
		t.Run(fsType, func(t *testing.T) {
			if fsType == "ext4" && !hasCapSysResource(t) {
				t.Skip("SKIPPING ext4 online growth: this process lacks CAP_SYS_RESOURCE (this sandbox withholds it from root); it runs wherever the capability exists")
			}
			f := newFixture(t)
			id, attrs := f.volume("pvc-copy-"+fsType, 512*mib, nil, true)
			staging, _ := f.paths(id)
			if err := f.stage(id, staging, fsCap(fsType), attrs); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(staging, "data"), []byte("from the source"), 0o600); err != nil {
				t.Fatal(err)
			}
			before := f.totalBytes(t, id, staging)
			if err := f.unstage(id, staging); err != nil {
				t.Fatal(err)
			}
			// The controller copied it into a volume 32 MiB larger, not
			// blank: a growth small next to the filesystem.
			if err := os.Truncate(f.file(id), 544*mib); err != nil {
				t.Fatal(err)
			}
			c, err := volume.ParseContext(attrs)
			if err != nil {
				t.Fatal(err)
			}
			c.CreatedBlank = false
			for range 2 { // a repeated stage is still fine
				if err := f.stage(id, staging, fsCap(fsType), c.Map()); err != nil {
					t.Fatal(err)
				}
			}
			if b, err := os.ReadFile(filepath.Join(staging, "data")); err != nil || string(b) != "from the source" {
				t.Fatalf("data after staging the copy: %q %v", b, err)
			}
			if after := f.totalBytes(t, id, staging); after-before < 24*mib {
				t.Fatalf("filesystem of %d bytes is %d bytes on a copy 32 MiB larger", before, after)
			}
		})
	}
}

func (f *fixture) totalBytes(t *testing.T, id, path string) int64 {
	t.Helper()
	stats, err := f.node.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: path})
	if err != nil {
		t.Fatal(err)
	}
	return stats.GetUsage()[0].GetTotal()
}

// A copy staged on the node where its source is staged has the source's
// filesystem UUID; XFS refuses that unless told not to check.
func TestACopyMountsBesideItsSource(t *testing.T) {
	for _, fsType := range []string{"ext4", "xfs"} {
		t.Run(fsType, func(t *testing.T) {
			f := newFixture(t)
			src, attrs := f.volume("pvc-src-"+fsType, 512*mib, nil, true)
			srcStaging, _ := f.paths(src)
			if err := f.stage(src, srcStaging, fsCap(fsType), attrs); err != nil {
				t.Fatal(err)
			}
			// The RDS copies the source while it is in use.
			data, err := os.ReadFile(f.file(src))
			if err != nil {
				t.Fatal(err)
			}
			cp, cattrs := f.volume("pvc-cp-"+fsType, 512*mib, data, false)
			cpStaging, _ := f.paths(cp)
			if err := f.stage(cp, cpStaging, fsCap(fsType), cattrs); err != nil {
				t.Fatalf("staging the copy beside its source: %v", err)
			}
		})
	}
}
