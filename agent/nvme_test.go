package agent_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/kernel/fabrics"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/kernel/sysfs/sysfstest"
	"github.com/rds-csi/rds-csi/kernel/uevent"
	"github.com/rds-csi/rds-csi/volume"
)

// fakeKernel answers writes to /dev/nvme-fabrics the way the kernel does:
// it records the option string, makes the controller and its namespace
// appear in the fake sysfs tree, and replies instance=N,cntlid=M.
type fakeKernel struct {
	t       *testing.T
	root    string
	mu      sync.Mutex
	written []string
	// already makes every connect answer EALREADY, as the kernel does
	// while an equivalent controller exists.
	already bool
}

type fakeHandle struct {
	k     *fakeKernel
	reply bytes.Buffer
}

func (h *fakeHandle) Write(p []byte) (int, error) {
	h.k.mu.Lock()
	defer h.k.mu.Unlock()
	opts := string(p)
	h.k.written = append(h.k.written, opts)
	if h.k.already {
		return 0, syscall.EALREADY
	}
	nqn := ""
	for _, kv := range strings.Split(opts, ",") {
		if v, ok := strings.CutPrefix(kv, "nqn="); ok {
			nqn = v
		}
	}
	sysfstest.AddController(h.k.t, h.k.root, sysfstest.Controller{Name: "nvme3", SubsysNQN: nqn, HostNQN: volume.HostNQN("node-1"), HostID: volume.HostID("node-1"), TrAddr: "10.0.0.5"})
	sysfstest.AddNamespace(h.k.t, h.k.root, sysfstest.Namespace{Controller: "nvme3", Head: 1, NSID: 1, Dev: "259:3", Sectors: 2097152})
	h.reply.WriteString("instance=3,cntlid=1\n")
	return len(p), nil
}

func (h *fakeHandle) Read(p []byte) (int, error) { return h.reply.Read(p) }
func (h *fakeHandle) Close() error               { return nil }

func (k *fakeKernel) open(string) (io.ReadWriteCloser, error) { return &fakeHandle{k: k}, nil }

func (k *fakeKernel) connects() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.written...)
}

func newNVMe(t *testing.T) (*agent.NVMe, *fakeKernel, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes block device nodes")
	}
	root, devDir := t.TempDir(), t.TempDir()
	// The device node the kernel's devtmpfs would make for 259:3.
	if err := unix.Mknod(filepath.Join(devDir, "nvme3n1"), unix.S_IFBLK|0o600, int(unix.Mkdev(259, 3))); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	events, err := uevent.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKernel{t: t, root: root}
	tree := sysfs.Tree{Root: root}
	return &agent.NVMe{Fabrics: &fabrics.Fabrics{Device: "fabrics", Sysfs: tree, Open: k.open}, Sysfs: tree, Events: events, DevDir: devDir}, k, root
}

func nvmeTarget() agent.Target {
	c := volume.Context{NQN: prefix + "pvc-n", Address: "10.0.0.5", Port: 4420, Connect: volume.DefaultConnectOptions()}
	return agent.Target{VolumeID: "pvc-n", Context: c, HostNQN: volume.HostNQN("node-1"), HostID: volume.HostID("node-1"), NSID: 1}
}

func TestNVMeAttachConnectsWithExplicitHostIdentityAndFindsTheDevice(t *testing.T) {
	n, k, _ := newNVMe(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dev, err := n.Attach(ctx, nvmeTarget())
	if err != nil {
		t.Fatal(err)
	}
	if dev.Dev != (sysfs.DevT{Major: 259, Minor: 3}) || filepath.Base(dev.Path) != "nvme3n1" {
		t.Fatalf("device %+v", dev)
	}
	got := k.connects()
	want := "transport=tcp,traddr=10.0.0.5,trsvcid=4420,nqn=" + prefix + "pvc-n,hostnqn=" + volume.HostNQN("node-1") + ",hostid=" + volume.HostID("node-1") + ",ctrl_loss_tmo=-1,reconnect_delay=5,keep_alive_tmo=5"
	if len(got) != 1 || got[0] != want {
		t.Fatalf("option strings written: %q\nwant %q", got, want)
	}
	// A second attach finds the namespace and connects nothing.
	if _, err := n.Attach(ctx, nvmeTarget()); err != nil {
		t.Fatal(err)
	}
	if len(k.connects()) != 1 {
		t.Fatalf("an attached volume was connected again: %q", k.connects())
	}
}

func TestNVMeFindDistrustsADeviceNodeOfAnotherNumber(t *testing.T) {
	n, _, root := newNVMe(t)
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme3", SubsysNQN: prefix + "pvc-n"})
	// sysfs says 259:9, but /dev/nvme3n1 is 259:3: something renumbered
	// under us, and the node must not be used.
	sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme3", Head: 1, NSID: 1, Dev: "259:9", Sectors: 2048})
	if _, err := n.Find(context.Background(), nvmeTarget()); err == nil || !strings.Contains(err.Error(), "sysfs says") {
		t.Fatalf("Find trusted a mismatched device node: %v", err)
	}
}

func TestNVMeFindOfAnAbsentVolumeIsNotAttached(t *testing.T) {
	n, _, _ := newNVMe(t)
	if _, err := n.Find(context.Background(), nvmeTarget()); !errors.Is(err, agent.ErrNotAttached) {
		t.Fatalf("got %v, want ErrNotAttached", err)
	}
}

func TestNVMeDetachDeletesEveryControllerOfTheSubsystemOnly(t *testing.T) {
	n, _, root := newNVMe(t)
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme3", SubsysNQN: prefix + "pvc-n"})
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme4", SubsysNQN: "nqn.2014-08.org.example:other"})
	if err := n.Detach(context.Background(), nvmeTarget()); err != nil {
		t.Fatal(err)
	}
	if got := sysfstest.ReadAttr(t, root, "class/nvme/nvme3", "delete_controller"); strings.TrimSpace(got) != "1" {
		t.Fatalf("nvme3 delete_controller = %q, want 1", got)
	}
	if got := sysfstest.ReadAttr(t, root, "class/nvme/nvme4", "delete_controller"); strings.TrimSpace(got) == "1" {
		t.Fatal("a controller of another subsystem was deleted")
	}
}

// ident is the identity sysfstest gives a namespace with UUID uuid.
func ident(uuid string) sysfs.Identity {
	return sysfs.Identity{WWID: "uuid." + uuid, UUID: uuid}
}

const (
	uuidStaged = "11111111-1111-4111-8111-111111111111"
	uuidOther  = "22222222-2222-4222-8222-222222222222"
)

// A live controller that dropped the volume's namespace (its identifiers
// changed across a reconnect, and the kernel scans no more by itself) is
// asked to rescan; the namespace it then shows is taken if it is the staged
// disk and refused, naming both identities, if it is another. Without the
// rescan the attach would wait until its deadline.
func TestNVMeAttachRescansALiveControllerThatLacksTheNamespace(t *testing.T) {
	for _, tc := range []struct {
		name, uuid string
		want       error
	}{
		{"the same disk comes back", uuidStaged, nil},
		{"another disk answers", uuidOther, agent.ErrIdentityChanged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, k, root := newNVMe(t)
			k.already = true
			sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme3", SubsysNQN: prefix + "pvc-n", HostNQN: volume.HostNQN("node-1"), HostID: volume.HostID("node-1"), TrAddr: "10.0.0.5"})
			rescan := filepath.Join(root, "class/nvme/nvme3/rescan_controller")
			if err := os.WriteFile(rescan, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			// The kernel's answer to a rescan: the namespace shows.
			go func() {
				for range 400 {
					if b, _ := os.ReadFile(rescan); strings.TrimSpace(string(b)) == "1" {
						sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme3", Head: 1, NSID: 1, Dev: "259:3", Sectors: 2048, UUID: tc.uuid})
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
			tgt := nvmeTarget()
			tgt.Identity = ident(uuidStaged)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			dev, err := n.Attach(ctx, tgt)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Attach: %v, want %v", err, tc.want)
			}
			if tc.want == nil {
				if dev.Identity != ident(uuidStaged) {
					t.Fatalf("device %+v", dev)
				}
				return
			}
			for _, id := range []string{uuidStaged, uuidOther} {
				if !strings.Contains(err.Error(), id) {
					t.Errorf("error %q does not name identity %s", err, id)
				}
			}
		})
	}
}

// A namespace present at attach is checked too: a restage or a heal onto a
// disk that is not the staged one is refused, and so is a smaller one.
func TestNVMeAttachRefusesAPresentNamespaceThatIsAnotherDisk(t *testing.T) {
	n, _, root := newNVMe(t)
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme3", SubsysNQN: prefix + "pvc-n"})
	sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme3", Head: 1, NSID: 1, Dev: "259:3", Sectors: 2048, UUID: uuidOther})
	tgt := nvmeTarget()
	tgt.Identity = ident(uuidStaged)
	if _, err := n.Attach(context.Background(), tgt); !errors.Is(err, agent.ErrIdentityChanged) {
		t.Fatalf("another disk: %v", err)
	}
	tgt.Identity, tgt.MinSize = ident(uuidOther), 2048*512+1
	if _, err := n.Attach(context.Background(), tgt); !errors.Is(err, agent.ErrIdentityChanged) || !strings.Contains(err.Error(), "smaller") {
		t.Fatalf("a smaller namespace: %v", err)
	}
	tgt.MinSize = 2048 * 512
	if dev, err := n.Attach(context.Background(), tgt); err != nil || dev.Size != 2048*512 {
		t.Fatalf("the staged disk: %+v %v", dev, err)
	}
}
