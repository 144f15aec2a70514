package k8s

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rds-csi/rds-csi/test/k8s/cluster"
	"github.com/rds-csi/rds-csi/volume"
)

// A StorageClass and a PVC make the real csi-provisioner call CreateVolume:
// the PV it creates binds, and describes the disk that now exists on the
// RDS; deleting the PVC (reclaim Delete) removes the disk and its backing
// file.
func TestProvisioning(t *testing.T) {
	b := newBed(t)
	tuned := cluster.StorageClass("rds-tuned", map[string]string{volume.KeyCtrlLossTmo: "600", volume.KeyReconnectDelay: "2"})
	if _, err := b.client.StorageV1().StorageClasses().Create(t.Context(), tuned, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, claim, class, size string
		block                    bool
		bytes                    int64
		// ctrlLossTmo is what the PV's volume context must say.
		ctrlLossTmo string
	}{
		{name: "a filesystem claim", claim: "fs", class: "rds", size: "1Gi", bytes: 1 << 30, ctrlLossTmo: "-1"},
		{name: "a block claim", claim: "block", class: "rds", size: "1500Mi", block: true, bytes: 1500 << 20, ctrlLossTmo: "-1"},
		{name: "StorageClass parameters reach the volume context", claim: "tuned", class: "rds-tuned", size: "64Mi", bytes: 64 << 20, ctrlLossTmo: "600"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.createPVC(t, tc.claim, tc.class, tc.size, tc.block)
			pv := b.waitBound(t, tc.claim)

			if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != cluster.DriverName {
				t.Fatalf("PV %s is not a volume of %s: %+v", pv.Name, cluster.DriverName, pv.Spec.PersistentVolumeSource)
			}
			slot := pv.Spec.CSI.VolumeHandle
			if want := volume.SlotFor(pv.Name); slot != want {
				t.Errorf("volume handle %q, want the slot of the PV's name %q", slot, want)
			}
			if got := pv.Spec.Capacity.Storage().Value(); got != tc.bytes {
				t.Errorf("PV capacity %d, want %d", got, tc.bytes)
			}
			wantMode := corev1.PersistentVolumeFilesystem
			if tc.block {
				wantMode = corev1.PersistentVolumeBlock
			}
			if pv.Spec.VolumeMode == nil || *pv.Spec.VolumeMode != wantMode {
				t.Errorf("PV volume mode %v, want %s", pv.Spec.VolumeMode, wantMode)
			}
			if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
				t.Errorf("PV reclaim policy %s, want Delete", pv.Spec.PersistentVolumeReclaimPolicy)
			}
			attrs := pv.Spec.CSI.VolumeAttributes
			if attrs[volume.KeyNQN] != volume.NQN(volume.DefaultNQNPrefix, slot) || attrs[volume.KeyAddress] != "127.0.0.1" || attrs[volume.KeyCtrlLossTmo] != tc.ctrlLossTmo {
				t.Errorf("PV volume attributes %v: want nqn %s, address 127.0.0.1, ctrlLossTmo %s",
					attrs, volume.NQN(volume.DefaultNQNPrefix, slot), tc.ctrlLossTmo)
			}

			disk, found := b.disk(t, slot)
			if !found {
				t.Fatalf("the PV is bound but the RDS has no disk in slot %s", slot)
			}
			if disk.Size != tc.bytes || !disk.Export || disk.NQN != attrs[volume.KeyNQN] || disk.FilePath != cluster.BasePath+"/"+slot+".img" {
				t.Errorf("disk %+v: want %d bytes, exported as %s, file %s/%s.img", disk, tc.bytes, attrs[volume.KeyNQN], cluster.BasePath, slot)
			}

			b.deletePVC(t, tc.claim, pv)
			if _, found := b.disk(t, slot); found {
				t.Errorf("the PV is gone but the disk in slot %s is still on the RDS", slot)
			}
			if files := b.files(t, slot); len(files) != 0 {
				t.Errorf("the PV is gone but its backing file is still on the RDS: %+v", files)
			}
		})
	}
	if left := b.disks(t); len(left) != 0 {
		t.Errorf("disks left on the RDS: %v", left)
	}
}
