package sysfs_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/kernel/sysfs/sysfstest"
)

const (
	nqnA = "nqn.2000-02.com.mikrotik:pvc-a"
	nqnB = "nqn.2000-02.com.mikrotik:pvc-b"
)

func TestController(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, root string)
		ctrl    string
		want    sysfs.Controller
		wantErr error // nil: success expected
		anyErr  bool  // an error whose kind does not matter
	}{
		{
			name: "a live controller with src_addr is read completely",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme3", SubsysNQN: nqnA, TrAddr: "10.0.0.5", TrSvcID: "4420", SrcAddr: "10.0.0.9", CntlID: 7})
			},
			ctrl: "nvme3",
			want: sysfs.Controller{
				Name: "nvme3", Instance: 3, State: "live", Transport: "tcp",
				Address: "traddr=10.0.0.5,trsvcid=4420,src_addr=10.0.0.9",
				TrAddr:  "10.0.0.5", TrSvcID: "4420", SrcAddr: "10.0.0.9",
				SubsysNQN: nqnA,
				HostNQN:   "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001",
				HostID:    "00000000-0000-0000-0000-000000000001",
				CntlID:    7,
			},
		},
		{
			name: "a connecting controller without src_addr is read with an empty source",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA, State: "connecting"})
			},
			ctrl: "nvme0",
			want: sysfs.Controller{
				Name: "nvme0", Instance: 0, State: "connecting", Transport: "tcp",
				Address: "traddr=10.0.0.5,trsvcid=4420", TrAddr: "10.0.0.5", TrSvcID: "4420",
				SubsysNQN: nqnA,
				HostNQN:   "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001",
				HostID:    "00000000-0000-0000-0000-000000000001",
				CntlID:    1,
			},
		},
		{
			name: "host_traddr and host_iface in the address are parsed and unknown keys ignored",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme1", SubsysNQN: nqnA,
					Address: "traddr=fd00::5,trsvcid=4420,host_traddr=fd00::9,host_iface=eth1,future_key=x,src_addr=fd00::9"})
			},
			ctrl: "nvme1",
			want: sysfs.Controller{
				Name: "nvme1", Instance: 1, State: "live", Transport: "tcp",
				Address: "traddr=fd00::5,trsvcid=4420,host_traddr=fd00::9,host_iface=eth1,future_key=x,src_addr=fd00::9",
				TrAddr:  "fd00::5", TrSvcID: "4420", SrcAddr: "fd00::9", HostTrAddr: "fd00::9", HostIface: "eth1",
				SubsysNQN: nqnA,
				HostNQN:   "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001",
				HostID:    "00000000-0000-0000-0000-000000000001",
				CntlID:    1,
			},
		},
		{
			name: "a local PCIe controller is readable although it has no fabrics attributes",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: "nqn.2014.08.org.nvmexpress:144d144dS4EWNX0R123456", Transport: "pcie", Address: "0000:01:00.0"})
				sysfstest.RemoveAttr(t, root, "class/nvme/nvme0", "hostnqn")
				sysfstest.RemoveAttr(t, root, "class/nvme/nvme0", "hostid")
			},
			ctrl: "nvme0",
			want: sysfs.Controller{
				Name: "nvme0", State: "live", Transport: "pcie", Address: "0000:01:00.0",
				SubsysNQN: "nqn.2014.08.org.nvmexpress:144d144dS4EWNX0R123456", CntlID: 1,
			},
		},
		{
			name:    "a controller that does not exist is reported as not existing",
			setup:   func(t *testing.T, root string) {},
			ctrl:    "nvme9",
			wantErr: fs.ErrNotExist,
		},
		{
			name: "a missing subsysnqn is a missing attribute, not a missing controller",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				sysfstest.RemoveAttr(t, root, "class/nvme/nvme0", "subsysnqn")
			},
			ctrl:    "nvme0",
			wantErr: sysfs.ErrMissingAttribute,
		},
		{
			name: "a controller being deleted (dev and subsysnqn gone, directory not yet) is not existing",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				sysfstest.RemoveAttr(t, root, "class/nvme/nvme0", "dev")
				sysfstest.RemoveAttr(t, root, "class/nvme/nvme0", "subsysnqn")
			},
			ctrl:    "nvme0",
			wantErr: fs.ErrNotExist,
		},
		{
			name: "a missing hostnqn on a TCP controller is an error",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				sysfstest.RemoveAttr(t, root, "class/nvme/nvme0", "hostnqn")
			},
			ctrl:    "nvme0",
			wantErr: sysfs.ErrMissingAttribute,
		},
		{
			name: "a missing address on a TCP controller is an error",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				sysfstest.RemoveAttr(t, root, "class/nvme/nvme0", "address")
			},
			ctrl:    "nvme0",
			wantErr: sysfs.ErrMissingAttribute,
		},
		{
			name: "an address without trsvcid is malformed",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA, Address: "traddr=10.0.0.5"})
			},
			ctrl:    "nvme0",
			wantErr: sysfs.ErrMalformed,
		},
		{
			name: "an address with a repeated key is malformed",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA, Address: "traddr=10.0.0.5,trsvcid=4420,traddr=10.0.0.6"})
			},
			ctrl:    "nvme0",
			wantErr: sysfs.ErrMalformed,
		},
		{
			name: "a non-numeric cntlid is malformed",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				sysfstest.SetAttr(t, root, "nvme0", "cntlid", "-1")
			},
			ctrl:    "nvme0",
			wantErr: sysfs.ErrMalformed,
		},
		{
			name: "an empty state is malformed",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				sysfstest.SetState(t, root, "nvme0", "")
			},
			ctrl:    "nvme0",
			wantErr: sysfs.ErrMalformed,
		},
		{
			name:   "a name that walks out of the class directory is refused",
			setup:  func(t *testing.T, root string) {},
			ctrl:   "../nvme0",
			anyErr: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			tc.setup(t, root)
			got, err := sysfs.Tree{Root: root}.Controller(tc.ctrl)
			switch {
			case tc.anyErr:
				if err == nil {
					t.Fatalf("Controller(%q) = %+v, want an error", tc.ctrl, got)
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Controller(%q) error = %v, want %v", tc.ctrl, err, tc.wantErr)
				}
				if !errors.Is(tc.wantErr, fs.ErrNotExist) && errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("Controller(%q) error = %v must not look like a missing controller", tc.ctrl, err)
				}
			case err != nil:
				t.Fatalf("Controller(%q): %v", tc.ctrl, err)
			case got != tc.want:
				t.Fatalf("Controller(%q) =\n %+v\nwant\n %+v", tc.ctrl, got, tc.want)
			}
		})
	}
}

func TestControllersListsEveryControllerAndStateIsOneRead(t *testing.T) {
	root := t.TempDir()
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme4", SubsysNQN: nqnB, State: "deleting (no IO)"})
	tree := sysfs.Tree{Root: root}

	all, err := tree.Controllers()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Name != "nvme0" || all[1].Name != "nvme4" {
		t.Fatalf("Controllers() = %+v, want nvme0 and nvme4", all)
	}
	if all[1].State != sysfs.StateDeletingNoIO {
		t.Fatalf("state of nvme4 = %q, want %q", all[1].State, sysfs.StateDeletingNoIO)
	}
	state, err := tree.ControllerState("nvme4")
	if err != nil || state != sysfs.StateDeletingNoIO {
		t.Fatalf("ControllerState(nvme4) = %q, %v", state, err)
	}
	if _, err := tree.ControllerState("nvme7"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ControllerState(nvme7) error = %v, want fs.ErrNotExist", err)
	}
	of, err := tree.ControllersOf(nqnB)
	if err != nil || len(of) != 1 || of[0].Name != "nvme4" {
		t.Fatalf("ControllersOf(B) = %+v, %v; want nvme4", of, err)
	}
	if none, err := tree.ControllersOf("nqn.2000-02.com.mikrotik:unknown"); err != nil || len(none) != 0 {
		t.Fatalf("ControllersOf(unknown) = %+v, %v; want none", none, err)
	}
}

func TestControllersOnAHostWithoutNVMeIsEmpty(t *testing.T) {
	all, err := sysfs.Tree{Root: t.TempDir()}.Controllers()
	if err != nil || len(all) != 0 {
		t.Fatalf("Controllers() = %+v, %v; want none", all, err)
	}
}

func TestResolveNamespace(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(t *testing.T, root string)
		nqn      string
		nsid     int
		wantName string
		wantDev  sysfs.DevT
		wantErr  error
	}{
		{
			name: "with native multipath the head is found and its hidden path is not",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Multipath: true, Head: 1, NSID: 1, Dev: "259:0"})
			},
			nqn: nqnA, nsid: 1, wantName: "nvme0n1", wantDev: sysfs.DevT{Major: 259, Minor: 0},
		},
		{
			name: "with multipath off the disk under the controller is found",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnB})
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme1", SubsysNQN: nqnA})
				sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme1", Head: 1, NSID: 1, Dev: "259:4"})
			},
			nqn: nqnA, nsid: 1, wantName: "nvme1n1", wantDev: sysfs.DevT{Major: 259, Minor: 4},
		},
		{
			name: "the nsid attribute decides, not the number in the name",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Multipath: true, Head: 1, NSID: 2, Dev: "259:1"})
				sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Multipath: true, Head: 2, NSID: 1, Dev: "259:2"})
			},
			nqn: nqnA, nsid: 1, wantName: "nvme0n2", wantDev: sysfs.DevT{Major: 259, Minor: 2},
		},
		{
			name: "a namespace of another subsystem with the same nsid is not taken",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnB})
				sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Multipath: true, Head: 1, NSID: 1, Dev: "259:0"})
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme1", SubsysNQN: nqnA})
				sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme1", Multipath: true, Head: 1, NSID: 1, Dev: "259:3"})
			},
			nqn: nqnA, nsid: 1, wantName: "nvme1n1", wantDev: sysfs.DevT{Major: 259, Minor: 3},
		},
		{
			name: "two paths of one multipath subsystem resolve to their single head",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA, TrAddr: "10.0.0.5"})
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme1", SubsysNQN: nqnA, TrAddr: "10.0.1.5"})
				sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Multipath: true, Head: 1, NSID: 1, Dev: "259:0"})
				sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme1", Multipath: true, Head: 1, NSID: 1, Dev: "259:0"})
			},
			nqn: nqnA, nsid: 1, wantName: "nvme0n1", wantDev: sysfs.DevT{Major: 259, Minor: 0},
		},
		{
			name: "two visible disks for one namespace fail closed",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA, TrAddr: "10.0.0.5"})
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme1", SubsysNQN: nqnA, TrAddr: "10.0.1.5"})
				sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Head: 1, NSID: 1, Dev: "259:0"})
				sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme1", Head: 1, NSID: 1, Dev: "259:1"})
			},
			nqn: nqnA, nsid: 1, wantErr: sysfs.ErrAmbiguous,
		},
		{
			name: "a hidden path alone is never returned",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				head := sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Multipath: true, Head: 1, NSID: 1, Dev: "259:0"})
				removeHead(t, root, head)
			},
			nqn: nqnA, nsid: 1, wantErr: fs.ErrNotExist,
		},
		{
			name: "a disk flagged hidden by the kernel is never returned, whatever its name",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				name := sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Head: 1, NSID: 1, Dev: "259:0"})
				writeFile(t, filepath.Join(root, "block", name, "hidden"), "1\n")
			},
			nqn: nqnA, nsid: 1, wantErr: fs.ErrNotExist,
		},
		{
			name:    "an unknown subsystem is not found",
			setup:   func(t *testing.T, root string) {},
			nqn:     nqnA,
			nsid:    1,
			wantErr: fs.ErrNotExist,
		},
		{
			name: "a namespace the subsystem does not have is not found",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Multipath: true, Head: 1, NSID: 1, Dev: "259:0"})
			},
			nqn: nqnA, nsid: 2, wantErr: fs.ErrNotExist,
		},
		{
			name: "a disk being removed (attributes gone, directory not yet) is not found",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				name := sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Head: 1, NSID: 1, Dev: "259:0"})
				for _, attr := range []string{"nsid", "dev", "size", "wwid"} {
					sysfstest.RemoveAttr(t, root, "block/"+name, attr)
				}
			},
			nqn: nqnA, nsid: 1, wantErr: fs.ErrNotExist,
		},
		{
			name: "a disk without nsid but with its dev is an error, not a vanished disk",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				name := sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Head: 1, NSID: 1, Dev: "259:0"})
				sysfstest.RemoveAttr(t, root, "block/"+name, "nsid")
			},
			nqn: nqnA, nsid: 1, wantErr: sysfs.ErrMissingAttribute,
		},
		{
			// device_del removes dev before the NVMe attributes: the first
			// moment of a removal, never a zero device number.
			name: "a matching disk whose dev is gone is being removed: not found",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				name := sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Multipath: true, Head: 1, NSID: 1, Dev: "259:0"})
				sysfstest.RemoveAttr(t, root, "block/"+name, "dev")
			},
			nqn: nqnA, nsid: 1, wantErr: fs.ErrNotExist,
		},
		{
			name: "a matching disk without wwid beside its dev is an error",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				name := sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Multipath: true, Head: 1, NSID: 1, Dev: "259:0"})
				sysfstest.RemoveAttr(t, root, "block/"+name, "wwid")
			},
			nqn: nqnA, nsid: 1, wantErr: sysfs.ErrMissingAttribute,
		},
		{
			name: "a matching disk without size is an error, not a zero size",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				name := sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Head: 1, NSID: 1, Dev: "259:0"})
				sysfstest.RemoveAttr(t, root, "block/"+name, "size")
			},
			nqn: nqnA, nsid: 1, wantErr: sysfs.ErrMissingAttribute,
		},
		{
			name: "a malformed dev is an error",
			setup: func(t *testing.T, root string) {
				sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
				sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Head: 1, NSID: 1, Dev: "259"})
			},
			nqn: nqnA, nsid: 1, wantErr: sysfs.ErrMalformed,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			tc.setup(t, root)
			ns, err := sysfs.Tree{Root: root}.ResolveNamespace(tc.nqn, tc.nsid)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("ResolveNamespace = %+v, %v; want error %v", ns, err, tc.wantErr)
				}
				if !errors.Is(tc.wantErr, fs.ErrNotExist) && errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("error %v must not look like a missing namespace", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveNamespace: %v", err)
			}
			if ns.Name != tc.wantName || ns.Dev != tc.wantDev || ns.NSID != tc.nsid || ns.SubsysNQN != tc.nqn {
				t.Fatalf("ResolveNamespace = %+v, want %s %v", ns, tc.wantName, tc.wantDev)
			}
		})
	}
}

func TestResolveNamespaceReadsIdentityAndSizeInBytes(t *testing.T) {
	root := t.TempDir()
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
	sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Multipath: true, Head: 1, NSID: 1, Dev: "259:0",
		Sectors: 20971520, UUID: "6b8e1a5e-9c2f-4c57-9d5e-1f6f0d6b9a10", NGUID: "a0b1c2d3-e4f5-0617-2839-4a5b6c7d8e9f"})
	ns, err := sysfs.Tree{Root: root}.ResolveNamespace(nqnA, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := sysfs.Namespace{Name: "nvme0n1", NSID: 1, Dev: sysfs.DevT{Major: 259}, Size: 10 << 30,
		WWID: "uuid.6b8e1a5e-9c2f-4c57-9d5e-1f6f0d6b9a10", UUID: "6b8e1a5e-9c2f-4c57-9d5e-1f6f0d6b9a10", NGUID: "a0b1c2d3-e4f5-0617-2839-4a5b6c7d8e9f", SubsysNQN: nqnA}
	if ns != want {
		t.Fatalf("ResolveNamespace =\n %+v\nwant\n %+v", ns, want)
	}
}

// After the controller is lost and reconnected, the kernel makes a new
// controller and usually a new disk with another name and dev_t; resolution
// by NQN and nsid must find the disk that exists now, under every way the
// kernel handles the subsystem in between.
func TestResolveNamespaceFollowsRenumbering(t *testing.T) {
	tests := []struct {
		name       string
		multipath  bool
		removal    sysfstest.Removal
		newHead    int
		newDev     string
		foundInGap bool // the namespace stays resolvable while no controller exists
		wantName   string
	}{
		{name: "with multipath off the namespace comes back under the new controller",
			removal: sysfstest.RemoveAll, newHead: 2, newDev: "259:5", wantName: "nvme2n2"},
		{name: "with multipath on the namespace comes back as a head of a new subsystem",
			multipath: true, removal: sysfstest.RemoveAll, newHead: 2, newDev: "259:5", wantName: "nvme1n2"},
		{name: "with a dead head still held the namespace comes back as a new head of the old subsystem",
			multipath: true, removal: sysfstest.KeepSubsystem, newHead: 2, newDev: "259:5", wantName: "nvme1n2"},
		{name: "with delayed removal the head survives and keeps its name and device",
			multipath: true, removal: sysfstest.KeepHeads, newHead: 1, newDev: "259:0", foundInGap: true, wantName: "nvme1n1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			tree := sysfs.Tree{Root: root}
			sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme1", SubsysNQN: nqnB})
			sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
			sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Multipath: tc.multipath, Head: 1, NSID: 1, Dev: "259:0"})
			if _, err := tree.ResolveNamespace(nqnA, 1); err != nil {
				t.Fatal(err)
			}

			sysfstest.RemoveController(t, root, "nvme0", tc.removal)
			_, err := tree.ResolveNamespace(nqnA, 1)
			if tc.foundInGap && err != nil {
				t.Fatalf("while the controller is gone: %v, want the surviving head", err)
			}
			if !tc.foundInGap && !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("while the controller is gone: %v, want fs.ErrNotExist", err)
			}
			sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme2", SubsysNQN: nqnA})
			sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme2", Multipath: tc.multipath, Head: tc.newHead, NSID: 1, Dev: tc.newDev})

			after, err := tree.ResolveNamespace(nqnA, 1)
			if err != nil {
				t.Fatal(err)
			}
			if after.Name != tc.wantName || after.Dev.String() != tc.newDev {
				t.Fatalf("after the reconnect: %+v, want %s at %s", after, tc.wantName, tc.newDev)
			}
			ctrls, err := tree.ControllersOf(nqnA)
			if err != nil || len(ctrls) != 1 || ctrls[0].Name != "nvme2" {
				t.Fatalf("ControllersOf after the reconnect = %+v, %v; want nvme2", ctrls, err)
			}
		})
	}
}

func TestCtrlLossTmo(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    int
		wantErr bool
	}{
		{name: "off reads as forever", content: "off", want: -1},
		{name: "a number of seconds reads as itself", content: "600", want: 600},
		{name: "zero reads as zero", content: "0", want: 0},
		{name: "an empty value is an error", content: "", wantErr: true},
		{name: "a word other than off is an error", content: "never", wantErr: true},
		{name: "a negative number is an error because the kernel prints off", content: "-1", wantErr: true},
		{name: "a signed number is an error", content: "+5", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA, CtrlLossTmo: "x"})
			sysfstest.SetAttr(t, root, "nvme0", "ctrl_loss_tmo", tc.content)
			got, err := sysfs.Tree{Root: root}.CtrlLossTmo("nvme0")
			if (err != nil) != tc.wantErr || (err == nil && got != tc.want) {
				t.Fatalf("CtrlLossTmo = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestCtrlLossTmoOfAMissingAttributeIsAnError(t *testing.T) {
	root := t.TempDir()
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
	sysfstest.RemoveAttr(t, root, "class/nvme/nvme0", "ctrl_loss_tmo")
	if got, err := (sysfs.Tree{Root: root}).CtrlLossTmo("nvme0"); err == nil {
		t.Fatalf("CtrlLossTmo = %d, want an error", got)
	}
}

func TestWritableAttributes(t *testing.T) {
	tests := []struct {
		name      string
		write     func(sysfs.Tree) error
		attr      string
		want      string
		wantErr   bool
		unchanged bool
	}{
		{name: "ctrl_loss_tmo -1 is written as -1", write: func(tr sysfs.Tree) error { return tr.SetCtrlLossTmo("nvme0", -1) }, attr: "ctrl_loss_tmo", want: "-1"},
		{name: "a short ctrl_loss_tmo is written as its seconds", write: func(tr sysfs.Tree) error { return tr.SetCtrlLossTmo("nvme0", 5) }, attr: "ctrl_loss_tmo", want: "5"},
		{name: "a ctrl_loss_tmo below -1 is refused before writing", write: func(tr sysfs.Tree) error { return tr.SetCtrlLossTmo("nvme0", -2) }, attr: "ctrl_loss_tmo", wantErr: true, unchanged: true},
		{name: "rescan writes 1 to rescan_controller", write: func(tr sysfs.Tree) error { return tr.Rescan("nvme0") }, attr: "rescan_controller", want: "1"},
		{name: "delete writes 1 to delete_controller", write: func(tr sysfs.Tree) error { return tr.DeleteController("nvme0") }, attr: "delete_controller", want: "1"},
		{name: "a malformed controller name is refused", write: func(tr sysfs.Tree) error { return tr.DeleteController("nvme0/..") }, attr: "delete_controller", wantErr: true, unchanged: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
			before := sysfstest.ReadAttr(t, root, "class/nvme/nvme0", tc.attr)
			err := tc.write(sysfs.Tree{Root: root})
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, want error %v", err, tc.wantErr)
			}
			got := sysfstest.ReadAttr(t, root, "class/nvme/nvme0", tc.attr)
			if tc.unchanged && got != before {
				t.Fatalf("%s = %q, want it unchanged (%q)", tc.attr, got, before)
			}
			if !tc.unchanged && got != tc.want {
				t.Fatalf("%s = %q, want %q", tc.attr, got, tc.want)
			}
		})
	}
}

func TestWritingToAMissingControllerReportsItGoneAndCreatesNothing(t *testing.T) {
	root := t.TempDir()
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
	sysfstest.RemoveController(t, root, "nvme0", sysfstest.RemoveAll)
	tree := sysfs.Tree{Root: root}
	if err := tree.DeleteController("nvme0"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("DeleteController of a gone controller: %v, want fs.ErrNotExist", err)
	}
	if err := tree.SetCtrlLossTmo("nvme0", 5); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("SetCtrlLossTmo of a gone controller: %v, want fs.ErrNotExist", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "class/nvme/nvme0")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a write recreated the controller: %v", err)
	}
}

func TestWritingAMissingAttributeDoesNotCreateIt(t *testing.T) {
	root := t.TempDir()
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
	sysfstest.RemoveAttr(t, root, "class/nvme/nvme0", "rescan_controller")
	if err := (sysfs.Tree{Root: root}).Rescan("nvme0"); err == nil {
		t.Fatal("Rescan succeeded on a controller without rescan_controller")
	}
	if _, err := os.Stat(filepath.Join(root, "class/nvme/nvme0/rescan_controller")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Rescan created the attribute: %v", err)
	}
}

func TestParseDevT(t *testing.T) {
	tests := []struct {
		in      string
		want    sysfs.DevT
		wantErr bool
	}{
		{in: "259:3", want: sysfs.DevT{Major: 259, Minor: 3}},
		{in: "8:0", want: sysfs.DevT{Major: 8}},
		{in: "4095:1048575", want: sysfs.DevT{Major: 4095, Minor: 1048575}},
		{in: "259", wantErr: true},
		{in: "259:", wantErr: true},
		{in: ":3", wantErr: true},
		{in: "259:3:1", wantErr: true},
		{in: "-1:3", wantErr: true},
		{in: "+259:3", wantErr: true},
		{in: "259: 3", wantErr: true},
		{in: "4294967296:0", wantErr: true},
	}
	for _, tc := range tests {
		t.Run("parsing "+tc.in, func(t *testing.T) {
			got, err := sysfs.ParseDevT(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("ParseDevT(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
			if err == nil && got.String() != tc.in {
				t.Fatalf("String() = %q, want %q", got.String(), tc.in)
			}
		})
	}
}

// removeHead deletes a multipath head but leaves its hidden paths, a state
// the kernel passes through while tearing a subsystem down.
func removeHead(t *testing.T, root, head string) {
	t.Helper()
	target, err := filepath.EvalSymlinks(filepath.Join(root, "block", head))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(target); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "block", head)); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A controller the kernel is deleting answers ENODEV for its attributes (a
// file opened before the removal) or ENOENT once its class link is gone.
// Both mean "gone": listings leave it out and reads report it missing, so
// that callers do not take it for an unreadable sysfs.
func TestAControllerBeingDeletedIsGoneNotAnError(t *testing.T) {
	tests := []struct {
		name   string
		delete func(t *testing.T, root string, faults *sysfstest.Faults)
	}{
		{"its attributes answer ENODEV", func(t *testing.T, root string, faults *sysfstest.Faults) {
			faults.Fail(t, root, "class/nvme/nvme0", syscall.ENODEV)
		}},
		{"its class link went before its attributes (ENOENT midway)", func(t *testing.T, root string, _ *sysfstest.Faults) {
			if err := os.Remove(filepath.Join(root, "class/nvme/nvme0")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			faults := &sysfstest.Faults{}
			tree := sysfs.Tree{Root: root, ReadFile: faults.ReadFile}
			sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
			sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Head: 1, NSID: 1, Dev: "259:0"})
			sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme1", SubsysNQN: nqnB})
			tc.delete(t, root, faults)

			if _, err := tree.Controller("nvme0"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Controller: error %v, want one wrapping fs.ErrNotExist", err)
			}
			if _, err := tree.ControllerState("nvme0"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("ControllerState: error %v, want one wrapping fs.ErrNotExist", err)
			}
			all, err := tree.Controllers()
			if err != nil || len(all) != 1 || all[0].Name != "nvme1" {
				t.Errorf("Controllers() = %+v, %v; want nvme1 alone", all, err)
			}
			if of, err := tree.ControllersOf(nqnA); err != nil || len(of) != 0 {
				t.Errorf("ControllersOf(A) = %+v, %v; want none", of, err)
			}
		})
	}
}

func TestANamespaceAnsweringENODEVIsNotFound(t *testing.T) {
	root := t.TempDir()
	faults := &sysfstest.Faults{}
	tree := sysfs.Tree{Root: root, ReadFile: faults.ReadFile}
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA})
	name := sysfstest.AddNamespace(t, root, sysfstest.Namespace{Controller: "nvme0", Head: 1, NSID: 1, Dev: "259:0"})
	faults.Fail(t, root, "block/"+name, syscall.ENODEV)
	if ns, err := tree.ResolveNamespace(nqnA, 1); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ResolveNamespace = %+v, %v; want an error wrapping fs.ErrNotExist", ns, err)
	}
}

// Identity.Same is the rule that keeps a volume on its own disk: every
// identifier known at stage must be there unchanged; one that appears is
// accepted; a zero identity (an older record) accepts anything.
func TestIdentitySameIsTheStagedDiskOnly(t *testing.T) {
	staged := sysfs.Identity{WWID: "uuid.a", UUID: "a", NGUID: "n"}
	for _, tc := range []struct {
		name string
		id   sysfs.Identity
		got  sysfs.Identity
		same bool
	}{
		{"unchanged", staged, staged, true},
		{"an EUI-64 reported now too", staged, sysfs.Identity{WWID: "uuid.a", UUID: "a", NGUID: "n", EUI64: "e"}, true},
		{"another UUID", staged, sysfs.Identity{WWID: "uuid.b", UUID: "b", NGUID: "n"}, false},
		{"another NGUID only", staged, sysfs.Identity{WWID: "uuid.a", UUID: "a", NGUID: "m"}, false},
		{"the UUID gone", staged, sysfs.Identity{WWID: "nvme.1-2", NGUID: "n"}, false},
		{"nothing known", sysfs.Identity{}, sysfs.Identity{WWID: "uuid.z"}, true},
	} {
		if got := tc.id.Same(tc.got); got != tc.same {
			t.Errorf("%s: %v.Same(%v) = %v, want %v", tc.name, tc.id, tc.got, got, tc.same)
		}
	}
}
