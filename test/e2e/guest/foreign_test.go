//go:build e2eguest

package guest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rds-csi/rds-csi/kernel/fabrics"
)

// A foreign subsystem is served by nvmet directly, not by the simulator,
// under an NQN outside the agent's managed prefix: it stands for whatever
// else a node is connected to (another array, a boot volume), which the
// agent must never touch. It also takes controller and subsystem numbers,
// which is how the renumbering scenario makes names shift.
type foreign struct {
	nqn  string
	port int
	// controller is the name the kernel gave its connection.
	controller string
}

const (
	foreignPrefix  = "nqn.2026-11.dev.rds-csi.e2e:foreign-"
	foreignHostNQN = "nqn.2026-11.dev.rds-csi.e2e:host:other-initiator"
	foreignHostID  = "5f0c2a4e-8d1b-4c3a-9e7f-2b6d1a0c9e11"
	cfgRoot        = "/sys/kernel/config/nvmet"
)

// connectForeign exports a small file-backed subsystem on its own port and
// connects to it with a raw /dev/nvme-fabrics write, as another tool on the
// node would. Cleanup disconnects and removes it.
func connectForeign(t *testing.T, name string, port int) *foreign {
	t.Helper()
	fr := &foreign{nqn: foreignPrefix + name, port: port}
	sub := filepath.Join(cfgRoot, "subsystems", fr.nqn)
	ns := filepath.Join(sub, "namespaces", "1")
	portDir := filepath.Join(cfgRoot, "ports", strconv.Itoa(port))
	link := filepath.Join(portDir, "subsystems", fr.nqn)
	img := filepath.Join(t.TempDir(), name+".img")

	t.Cleanup(func() {
		for _, c := range controllersOf(t, fr.nqn) {
			_ = sysTree.DeleteController(ctrlName(c))
		}
		_ = os.Remove(link)
		_ = os.WriteFile(filepath.Join(ns, "enable"), []byte("0"), 0o644)
		_ = os.Remove(ns)
		_ = os.Remove(sub)
		_ = os.Remove(portDir)
	})

	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	must(t, "sizing the foreign image", f.Truncate(16<<20))
	_ = f.Close()
	must(t, "mkdir foreign subsystem", os.Mkdir(sub, 0o755))
	cfgWrite(t, filepath.Join(sub, "attr_allow_any_host"), "1")
	must(t, "mkdir foreign namespace", os.Mkdir(ns, 0o755))
	cfgWrite(t, filepath.Join(ns, "device_path"), img)
	cfgWrite(t, filepath.Join(ns, "buffered_io"), "1") // tmpfs: no O_DIRECT on 6.1
	cfgWrite(t, filepath.Join(ns, "enable"), "1")
	must(t, "mkdir foreign port", os.Mkdir(portDir, 0o755))
	cfgWrite(t, filepath.Join(portDir, "addr_trtype"), "tcp")
	cfgWrite(t, filepath.Join(portDir, "addr_adrfam"), "ipv4")
	cfgWrite(t, filepath.Join(portDir, "addr_traddr"), "127.0.0.1")
	cfgWrite(t, filepath.Join(portDir, "addr_trsvcid"), strconv.Itoa(port))
	must(t, "linking the foreign subsystem", os.Symlink(sub, link))

	fab := &fabrics.Fabrics{Device: fabrics.DefaultDevice, Sysfs: sysTree}
	c, err := fab.Connect(ctxFor(t, 60*time.Second), fabrics.Options{
		Transport: "tcp", TrAddr: "127.0.0.1", TrSvcID: strconv.Itoa(port), NQN: fr.nqn,
		HostNQN: foreignHostNQN, HostID: foreignHostID, CtrlLossTmo: -1, ReconnectDelay: 1, KeepAliveTmo: 5, FastIOFailTmo: -1,
	})
	if err != nil {
		t.Fatalf("connecting the foreign subsystem %s: %v", fr.nqn, err)
	}
	fr.controller = c.Controller
	waitFor(t, "the foreign namespace appears", 60*time.Second, func() bool {
		_, err := sysTree.ResolveNamespace(fr.nqn, 1)
		return err == nil
	})
	t.Logf("foreign subsystem %s connected as %s, namespace %s", fr.nqn, fr.controller, device(t, fr.nqn))
	return fr
}

// assertLive fails unless the foreign controller is still there, live and
// under the same name.
func (fr *foreign) assertLive(t *testing.T) {
	t.Helper()
	st, err := sysTree.ControllerState(fr.controller)
	if errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the foreign controller %s (%s) is gone: the agent disconnected what it does not manage", fr.controller, fr.nqn)
	}
	if err != nil {
		t.Fatal(err)
	}
	if st != "live" {
		t.Fatalf("the foreign controller %s is %s, not live", fr.controller, st)
	}
	c, err := sysTree.Controller(fr.controller)
	if err != nil || c.SubsysNQN != fr.nqn {
		t.Fatalf("controller %s is now %+v (%v), not the foreign %s", fr.controller, c, err, fr.nqn)
	}
}

func cfgWrite(t *testing.T, path, value string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		t.Fatalf("configfs %s=%q: %v", path, value, err)
	}
}

// ctrlName strips the "(state)" controllersOf adds.
func ctrlName(s string) string {
	for i := range len(s) {
		if s[i] == '(' {
			return s[:i]
		}
	}
	return s
}
