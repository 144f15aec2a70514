//go:build e2eguest

package guest

import (
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// TestExpansion grows published volumes online: the controller grows the
// disk on the RDS, nvmet tells the initiator, and NodeExpandVolume makes the
// device and the filesystem show the new size, with the data intact.
func TestExpansion(t *testing.T) {
	for _, kind := range []struct {
		fsType     string
		size, grow int64
	}{
		{"ext4", 64 << 20, 128 << 20},
		{"xfs", 320 << 20, 480 << 20},
		{"block", 64 << 20, 128 << 20},
	} {
		t.Run(kind.fsType, func(t *testing.T) {
			f := newFixture(t)
			v := f.create("expand-"+kind.fsType, kind.fsType, kind.size)
			must(t, "NodeStage", f.stage(v))
			must(t, "NodePublish", f.publish(v))
			dev := device(t, v.nqn)
			p := newPayload(t, 2<<20)
			const off = 4 << 20
			check := func(step string) { p.checkFile(t, step, filepath.Join(v.target, "data")) }
			if kind.fsType == "block" {
				p.writeAt(t, v.target, off)
				check = func(step string) { p.checkAt(t, step, v.target, off) }
			} else {
				p.writeFile(t, filepath.Join(v.target, "data"))
			}
			check("before expansion")
			var fsBefore int64
			if kind.fsType != "block" {
				fsBefore = fsSize(t, v.target)
			}

			cresp, err := f.ctrl.ControllerExpandVolume(rpcCtx(t), &csi.ControllerExpandVolumeRequest{
				VolumeId: v.id, CapacityRange: &csi.CapacityRange{RequiredBytes: kind.grow}, VolumeCapability: v.cap,
			})
			must(t, "ControllerExpandVolume", err)
			if cresp.GetCapacityBytes() < kind.grow {
				t.Fatalf("ControllerExpandVolume reports %d bytes, asked for %d", cresp.GetCapacityBytes(), kind.grow)
			}
			t.Logf("controller grew the disk to %d bytes; node expansion required: %v", cresp.GetCapacityBytes(), cresp.GetNodeExpansionRequired())

			nresp, err := f.node.NodeExpandVolume(rpcCtx(t), &csi.NodeExpandVolumeRequest{
				VolumeId: v.id, VolumePath: v.target, StagingTargetPath: v.staging,
				CapacityRange: &csi.CapacityRange{RequiredBytes: kind.grow}, VolumeCapability: v.cap,
			})
			must(t, "NodeExpandVolume", err)
			if got := blockSize(t, dev); got != cresp.GetCapacityBytes() {
				t.Errorf("BLKGETSIZE64 of %s is %d after expansion, the disk has %d", dev, got, cresp.GetCapacityBytes())
			}
			if nresp.GetCapacityBytes() != cresp.GetCapacityBytes() {
				t.Errorf("NodeExpandVolume reports %d bytes, the disk has %d", nresp.GetCapacityBytes(), cresp.GetCapacityBytes())
			}
			if kind.fsType != "block" {
				// Metadata (journal, log, allocation groups) takes its
				// share, so the filesystem is compared with its old self:
				// it must have gained most of what the device gained.
				after := fsSize(t, v.target)
				t.Logf("statfs size %d -> %d", fsBefore, after)
				if after-fsBefore < (kind.grow-kind.size)*3/4 {
					t.Errorf("the filesystem grew by %d bytes only, the device by %d", after-fsBefore, kind.grow-kind.size)
				}
				// The new space is usable: a file as large as the whole
				// old filesystem fits. It is allocated, not written,
				// because pushing hundreds of MiB through an emulated
				// CPU takes minutes; a payload goes at its end.
				more := filepath.Join(v.target, "more")
				allocate(t, more, fsBefore)
				q := newPayload(t, 1<<20)
				q.writeAt(t, more, fsBefore-int64(len(q.data)))
				q.checkAt(t, "new space", more, fsBefore-int64(len(q.data)))
			} else {
				q := newPayload(t, 1<<20)
				q.writeAt(t, v.target, kind.size)
				q.checkAt(t, "beyond the old end", v.target, kind.size)
			}
			check("after expansion")

			must(t, "NodeUnpublish", f.unpublish(v))
			must(t, "NodeUnstage", f.unstage(v))
			must(t, "DeleteVolume", f.delete(v))
			f.assertGone(t, v)
		})
	}
}
