package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/volume"
)

// record is what the agent keeps about a staged volume, beside its staging
// path, so that after a restart it knows which NQN, namespace and device a
// staging or publish path belongs to without asking anyone.
type record struct {
	VolumeID string `json:"volumeID"`
	NQN      string `json:"nqn"`
	// Address, Port and Connect are what a reconnect needs, so the agent
	// can heal a volume without asking the CO for its volume context.
	Address string                `json:"address,omitempty"`
	Port    int                   `json:"port,omitempty"`
	Connect volume.ConnectOptions `json:"connect"`
	NSID    int                   `json:"nsid"`
	Device  string                `json:"device"` // major:minor when staged
	// Namespace is the major:minor of the namespace below a multipath
	// front (Device is then the front's), as last attached.
	Namespace   string   `json:"namespace,omitempty"`
	Block       bool     `json:"block"`
	FSType      string   `json:"fsType,omitempty"`
	StagingPath string   `json:"stagingPath"`
	Targets     []string `json:"targets,omitempty"`
	// PVCNamespace and PVCName name the volume's claim (from its volume
	// context), so that Events reach it after an agent restart too.
	PVCNamespace string `json:"pvcNamespace,omitempty"`
	PVCName      string `json:"pvcName,omitempty"`
	// Phase is phaseAttaching while NodeStage has not attached the volume
	// yet: the record is written before the first change on the host, so
	// that an agent killed in the middle leaves a record that says what to
	// undo. Empty once the volume is attached (and in older records), and
	// phaseDetaching once NodeUnstage has found it unused and begins to
	// take it apart.
	Phase string `json:"phase,omitempty"`
	// Identity and Size are the namespace's when it was attached: a
	// namespace with another identity, or smaller, is another disk, which
	// no reattach or heal may put under the volume's consumers.
	Identity sysfs.Identity `json:"identity"`
	Size     int64          `json:"size,omitempty"`
	// Refused says why a heal refused the namespace as another disk: the
	// volume stays refused (its front failing I/O) across agent restarts,
	// until it is staged again onto its own disk.
	Refused string `json:"refused,omitempty"`
}

// phaseAttaching marks the intent record of a NodeStage that has not
// attached the volume yet; phaseDetaching the record of a NodeUnstage that
// has started to take the volume apart (nothing uses it any more). A
// restarted agent heals neither: nothing was handed to a consumer, or
// nothing holds it any longer.
const (
	phaseAttaching = "attaching"
	phaseDetaching = "detaching"
)

// attached tells a record of a volume that NodeStage attached.
func (r record) attached() bool { return r.Phase == "" }

// healVolume is what the health model tracks of the staged volume: the
// namespace, below the front if there is one.
func (r record) healVolume() heal.Volume {
	return heal.Volume{VolumeID: r.VolumeID, NQN: r.NQN, NSID: r.NSID, Device: r.namespace(), Identity: r.Identity, PVCNamespace: r.PVCNamespace, PVCName: r.PVCName}
}

// recordPath is the record's file: in the staging path's parent directory,
// named after the volume, so volumes whose staging paths share a parent (raw
// block staging) keep separate records.
func recordPath(stagingPath, volumeID string) string {
	return filepath.Join(filepath.Dir(filepath.Clean(stagingPath)), "rds-csi-"+volumeID+".json")
}

func loadRecord(stagingPath, volumeID string) (record, bool, error) {
	var r record
	ok, err := readJSON(recordPath(stagingPath, volumeID), &r)
	if err != nil || !ok {
		return record{}, false, err
	}
	if r.VolumeID != volumeID {
		return record{}, false, fmt.Errorf("record %s belongs to volume %q", recordPath(stagingPath, volumeID), r.VolumeID)
	}
	return r, true, nil
}

// readJSON reads the JSON file at path into v; a missing file is not an
// error but false.
func readJSON(path string, v any) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return true, nil
}

// save writes the record atomically and durably: a crash, of the agent or
// of the node, leaves the old or the new one.
func (r record) save() error {
	return writeFileSynced(recordPath(r.StagingPath, r.VolumeID), r)
}

// writeFileSynced writes v as JSON to path through a synced temporary file
// renamed over it, and syncs the directory, so that the file is whole and
// there once it returns.
func writeFileSynced(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer func() { _ = dir.Close() }()
	return dir.Sync()
}

// namespace is the device the health model watches: the namespace, below
// the front if there is one.
func (r record) namespace() string {
	if r.Namespace != "" {
		return r.Namespace
	}
	return r.Device
}

func removeRecord(stagingPath, volumeID string) error {
	err := os.Remove(recordPath(stagingPath, volumeID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func (r *record) addTarget(t string) bool {
	if slices.Contains(r.Targets, t) {
		return false
	}
	r.Targets = append(r.Targets, t)
	slices.Sort(r.Targets)
	return true
}

func (r *record) removeTarget(t string) bool {
	i := slices.Index(r.Targets, t)
	if i < 0 {
		return false
	}
	r.Targets = slices.Delete(r.Targets, i, i+1)
	return true
}
