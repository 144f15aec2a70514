package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/volume"
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
	// Connect are the volume's connect options as staged.
	Connect volume.ConnectOptions
	// Refused is set when a heal refused the volume's namespace as another
	// disk: its front keeps failing I/O.
	Refused bool
}

// Resume reads every volume record under kubeletDir, so that after a
// restart the agent knows what it has staged without asking anyone, and
// returns the volumes. It changes nothing on the host: a live
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
		if !rec.attached() {
			// A NodeStage killed before it attached the volume (nothing was
			// handed to a consumer), or a NodeUnstage killed while it took
			// the volume apart (nothing uses it any more). The CO calls
			// again, and the record tells what was made; until then the
			// volume is not healed, and what was left (a controller, a
			// front) is the orphan sweep's once its grace has passed.
			klog.InfoS("Found the record of an interrupted NodeStage or NodeUnstage; waiting for the CO to call again", "volumeID", rec.VolumeID, "staging", rec.StagingPath, "phase", rec.Phase)
			continue
		}
		if rec.Identity.IsZero() {
			rec = n.adoptIdentity(rec)
		}
		if err := n.tracker.Track(rec.healVolume()); err != nil {
			klog.ErrorS(err, "Cannot track a resumed volume", "volumeID", rec.VolumeID)
		}
		vols = append(vols, StagedVolume{VolumeID: rec.VolumeID, NQN: rec.NQN, StagingPath: rec.StagingPath, NSID: rec.NSID, Block: rec.Block, Connect: rec.Connect, Refused: rec.Refused != ""})
	}
	klog.InfoS("Resumed staged volumes from their records", "count", len(vols))
	return vols, nil
}

// adoptIdentity records the identity of the namespace of a volume whose
// record has none (an agent of an older version staged it): the namespace
// present now, if it is. Without a namespace the identity is taken at the
// next attach.
func (n *Node) adoptIdentity(rec record) record {
	ctx, cancel := context.WithTimeout(context.Background(), n.opts.InUseTimeout)
	defer cancel()
	d, err := n.attacher.Find(ctx, n.recordTarget(rec))
	if err != nil || d.Identity.IsZero() {
		return rec
	}
	rec.Identity, rec.Size = d.Identity, max(rec.Size, d.Size)
	if err := rec.save(); err != nil {
		klog.ErrorS(err, "Cannot record the identity of a resumed volume's namespace", "volumeID", rec.VolumeID)
		return rec
	}
	klog.InfoS("Recorded the identity of a volume staged by an older agent", "volumeID", rec.VolumeID, "identity", rec.Identity.String())
	return rec
}

// UndoShutdown gives resumed volumes back what a previous run's shutdown
// mode (--shutdown-ctrl-loss-tmo) took from them: each controller's own
// ctrl_loss_tmo, and a front that queues I/O while it has no path. The
// shutdown mode acts on SIGTERM, which a restart sends as well as a node
// shutdown (systemctl restart, a DaemonSet rollout); without this, a
// restarted agent would leave every volume to fail its I/O after a few
// seconds of outage. Only the controllers of the resumed volumes are
// touched, and a ctrl_loss_tmo is only ever raised back, never lowered.
func (n *Node) UndoShutdown(ctx context.Context, vols []StagedVolume) error {
	tree := sysfs.Tree{Root: n.opts.SysRoot}
	fq, fronts := n.attacher.(frontQueueing)
	var errs []error
	for _, v := range vols {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		cs, err := tree.ControllersOf(v.NQN)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("volume %s: %w", v.VolumeID, err))
		}
		want := v.Connect.CtrlLossTmo
		for _, c := range cs {
			cur, err := tree.CtrlLossTmo(c.Name)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				continue
			case err != nil:
				errs = append(errs, fmt.Errorf("volume %s: %w", v.VolumeID, err))
				continue
			case cur == want || cur == -1 || (want >= 0 && cur > want):
				// Never lowered: -1 (off) already reconnects for ever, and
				// the kernel prints attempts × reconnect_delay, which can
				// round the volume's own value up.
				continue
			}
			if err := tree.SetCtrlLossTmo(c.Name, want); err != nil {
				errs = append(errs, fmt.Errorf("volume %s: %w", v.VolumeID, err))
				continue
			}
			klog.InfoS("Restored ctrl_loss_tmo after a shutdown-mode stop", "volume", v.VolumeID, "controller", c.Name, "from", cur, "to", want)
		}
		if fronts {
			queue := fq.StartQueueing
			if v.Refused {
				queue = fq.StopQueueing // its I/O keeps failing
			}
			if err := queue(ctx, Target{VolumeID: v.VolumeID}); err != nil {
				errs = append(errs, fmt.Errorf("volume %s: %w", v.VolumeID, err))
			}
		}
	}
	return errors.Join(errs...)
}
