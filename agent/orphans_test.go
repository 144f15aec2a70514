package agent_test

import (
	"context"
	"strings"
	"testing"

	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/kernel/sysfs/sysfstest"
)

func TestAnOrphanInUseIsNeverDisconnected(t *testing.T) {
	f := newFixture(t)
	root := t.TempDir()
	id, attrs := f.volume("pvc-orphan", 64*mib, nil, true)
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme7", SubsysNQN: prefix + id})
	staging, _ := f.paths(id)
	if err := f.stage(id, staging, fsCap("ext4"), attrs); err != nil {
		t.Fatal(err)
	}
	var disconnected []string
	// The sweeping agent does not know the staging (a record lost, or an
	// agent restarted without it): only the in-use check stands between
	// the mount and the disconnect.
	sweeper := f.newNode(prefix)
	disconnect := sweeper.OrphanDisconnect(sysfs.Tree{Root: root}, func(_ context.Context, c string) error {
		disconnected = append(disconnected, c)
		return nil
	})
	// Mounted: the orphan (say, a volume whose record was lost) stays.
	if err := disconnect(context.Background(), "nvme7"); err == nil || len(disconnected) != 0 {
		t.Fatalf("an orphan in use was disconnected: err=%v, disconnected=%v", err, disconnected)
	}
	if err := f.unstage(id, staging); err != nil {
		t.Fatal(err)
	}
	// Unused now: it goes.
	if err := disconnect(context.Background(), "nvme7"); err != nil || len(disconnected) != 1 {
		t.Fatalf("an unused orphan was kept: err=%v, disconnected=%v", err, disconnected)
	}
}

func TestAnOrphanOutsideTheManagedPrefixIsRefused(t *testing.T) {
	f := newFixture(t)
	root := t.TempDir()
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme8", SubsysNQN: "nqn.2014-08.org.example:foreign"})
	called := false
	disconnect := f.node.OrphanDisconnect(sysfs.Tree{Root: root}, func(context.Context, string) error { called = true; return nil })
	if err := disconnect(context.Background(), "nvme8"); err == nil || called {
		t.Fatalf("foreign controller: err=%v called=%v", err, called)
	}
}

// A volume staged since the loop judged its controller an orphan is nobody's
// orphan: the sweep re-checks after taking the volume's slot, even when
// nothing uses the volume yet (a raw block volume staged, not published).
func TestAVolumeStagedMeanwhileIsNotAnOrphan(t *testing.T) {
	f := newFixture(t)
	root := t.TempDir()
	id, attrs := f.volume("pvc-raced", 64*mib, nil, true)
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme8", SubsysNQN: prefix + id})
	staging, _ := f.paths(id)
	if err := f.stage(id, staging, blockCap(), attrs); err != nil {
		t.Fatal(err)
	}
	var disconnected []string
	disconnect := f.node.OrphanDisconnect(sysfs.Tree{Root: root}, func(_ context.Context, c string) error {
		disconnected = append(disconnected, c)
		return nil
	})
	if err := disconnect(context.Background(), "nvme8"); err == nil || !strings.Contains(err.Error(), "is staged") || len(disconnected) != 0 {
		t.Fatalf("a staged volume was swept: err=%v, disconnected=%v", err, disconnected)
	}
}
