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
	"github.com/rds-csi/rds-csi/volume"
)

// record is what the agent keeps about a staged volume, beside its staging
// path, so that after a restart it knows which NQN, namespace and device a
// staging or publish path belongs to without asking anyone (HEAL-4).
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
}

// healVolume is what the health model tracks of the staged volume: the
// namespace, below the front if there is one.
func (r record) healVolume() heal.Volume {
	return heal.Volume{VolumeID: r.VolumeID, NQN: r.NQN, NSID: r.NSID, Device: r.namespace(), PVCNamespace: r.PVCNamespace, PVCName: r.PVCName}
}

// recordPath is the record's file: in the staging path's parent directory,
// named after the volume, so volumes whose staging paths share a parent (raw
// block staging) keep separate records.
func recordPath(stagingPath, volumeID string) string {
	return filepath.Join(filepath.Dir(filepath.Clean(stagingPath)), "rds-csi-"+volumeID+".json")
}

func loadRecord(stagingPath, volumeID string) (record, bool, error) {
	b, err := os.ReadFile(recordPath(stagingPath, volumeID))
	if errors.Is(err, fs.ErrNotExist) {
		return record{}, false, nil
	}
	if err != nil {
		return record{}, false, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return record{}, false, fmt.Errorf("record %s: %w", recordPath(stagingPath, volumeID), err)
	}
	if r.VolumeID != volumeID {
		return record{}, false, fmt.Errorf("record %s belongs to volume %q", recordPath(stagingPath, volumeID), r.VolumeID)
	}
	return r, true, nil
}

// save writes the record atomically: a crash leaves the old or the new one.
func (r record) save() error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	path := recordPath(r.StagingPath, r.VolumeID)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
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
