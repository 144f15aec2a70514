package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

func TestResumeFindsStagedVolumesFromTheirRecords(t *testing.T) {
	f := newFixture(t)
	kubelet := filepath.Join(f.dir, "kubelet-root")
	fsStaging := filepath.Join(kubelet, "plugins/kubernetes.io/csi/rds.csi.dev/0123abcd/globalmount")
	blockStaging := filepath.Join(kubelet, "plugins/kubernetes.io/csi/volumeDevices/staging/pv-block")
	for _, p := range []string{fsStaging, blockStaging} {
		if err := os.MkdirAll(p, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { unmountAll(kubelet) })
	fsID, fsAttrs := f.volume("pvc-resume-fs", 64*mib, nil, true)
	blockID, blockAttrs := f.volume("pvc-resume-block", 64*mib, nil, true)
	if err := f.stage(fsID, fsStaging, fsCap("ext4"), fsAttrs); err != nil {
		t.Fatal(err)
	}
	if err := f.stage(blockID, blockStaging, blockCap(), blockAttrs); err != nil {
		t.Fatal(err)
	}

	// A restarted agent: a new Node with nothing in memory.
	restarted := f.newNode(prefix)
	vols, err := restarted.Resume(kubelet)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, v := range vols {
		got[v.VolumeID] = v.Block
	}
	if len(got) != 2 || got[fsID] || !got[blockID] {
		t.Fatalf("resumed %+v", vols)
	}
	// Resuming touched nothing: both are still attached and the filesystem
	// still mounted.
	if !attached(t, f.file(fsID)) || !attached(t, f.file(blockID)) || len(mountsAt(t, fsStaging)) != 1 {
		t.Fatal("resume changed the host")
	}
	// And the restarted agent can report health by volume ID alone.
	resp, err := restarted.NodeGetVolumeHealth(context.Background(), &csi.NodeGetVolumeHealthRequest{VolumeId: fsID})
	if err != nil || len(resp.GetVolumeHealth().GetHealthStatuses()) != 0 {
		t.Fatalf("health after resume: %+v %v", resp, err)
	}
}
