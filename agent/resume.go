package agent

import (
	"encoding/json"
	"os"
	"path/filepath"

	"k8s.io/klog/v2"
)

// recordGlob finds the records under the kubelet directory: filesystem
// volumes stage at plugins/kubernetes.io/csi/<driver>/<hash>/globalmount,
// block volumes at plugins/kubernetes.io/csi/volumeDevices/staging/<pv>, and
// a record sits in the staging path's parent.
const recordGlob = "plugins/kubernetes.io/csi/*/*/rds-csi-*.json"

// StagedVolume is a volume this node has staged, as its record says.
type StagedVolume struct {
	VolumeID, NQN, StagingPath string
	NSID                       int
	Block                      bool
}

// Resume reads every volume record under kubeletDir, so that after a
// restart the agent knows what it has staged without asking anyone, and
// returns the volumes (HEAL-4). It changes nothing on the host: a live
// controller is never disconnected because the agent restarted. Unreadable
// records are reported and skipped.
func (n *Node) Resume(kubeletDir string) ([]StagedVolume, error) {
	paths, err := filepath.Glob(filepath.Join(kubeletDir, recordGlob))
	if err != nil {
		return nil, err
	}
	var vols []StagedVolume
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			klog.ErrorS(err, "Cannot read a volume record", "path", p)
			continue
		}
		var rec record
		if err := json.Unmarshal(b, &rec); err != nil {
			klog.ErrorS(err, "Skipping a malformed volume record", "path", p)
			continue
		}
		if rec.VolumeID == "" || recordPath(rec.StagingPath, rec.VolumeID) != p {
			klog.ErrorS(nil, "Skipping a volume record that names another place", "path", p, "stagingPath", rec.StagingPath, "volumeID", rec.VolumeID)
			continue
		}
		n.rememberStaging(rec.VolumeID, rec.StagingPath)
		if err := n.tracker.Track(rec.healVolume()); err != nil {
			klog.ErrorS(err, "Cannot track a resumed volume", "volumeID", rec.VolumeID)
		}
		vols = append(vols, StagedVolume{VolumeID: rec.VolumeID, NQN: rec.NQN, StagingPath: rec.StagingPath, NSID: rec.NSID, Block: rec.Block})
	}
	klog.InfoS("Resumed staged volumes from their records", "count", len(vols))
	return vols, nil
}
