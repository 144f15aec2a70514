package routeros

import (
	"fmt"
	"testing"
)

func TestDiskCopyRendersExactly(t *testing.T) {
	tests := []struct {
		spec CopySpec
		want string
	}{
		{
			CopySpec{From: "pvc-a1", Slot: "snap-0123456789abcdef0123456789a", FilePath: "/storage-pool/csi/snap-0123456789abcdef0123456789a.1700000000.4096.pvc-a1.img"},
			`/disk add type=file copy-from=[find slot="pvc-a1"] file-path="/storage-pool/csi/snap-0123456789abcdef0123456789a.1700000000.4096.pvc-a1.img" slot="snap-0123456789abcdef0123456789a" mount-filesystem=no nvme-tcp-export=no`,
		},
		{
			CopySpec{From: "snap-x", Slot: "pvc-b", FilePath: "/storage-pool/csi/pvc-b.img", NQN: "nqn.2000-02.com.mikrotik:pvc-b", Port: 4420},
			`/disk add type=file copy-from=[find slot="snap-x"] file-path="/storage-pool/csi/pvc-b.img" slot="pvc-b" mount-filesystem=no nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-b"`,
		},
	}
	for _, tt := range tests {
		cmd, err := DiskCopy(tt.spec)
		if err != nil {
			t.Fatal(err)
		}
		if cmd.String() != tt.want || cmd.Kind() != "disk-copy" {
			t.Errorf("got %s %q\nwant disk-copy %q", cmd.Kind(), cmd, tt.want)
		}
	}
}

func TestDiskCopyRefusesHostileValues(t *testing.T) {
	good := CopySpec{From: "pvc-a", Slot: "pvc-b", FilePath: "/storage-pool/csi/pvc-b.img", NQN: "nqn.2000-02.com.mikrotik:pvc-b", Port: 4420}
	for _, v := range hostile {
		for name, s := range map[string]CopySpec{
			"from": func() CopySpec { s := good; s.From = v; return s }(),
			"slot": func() CopySpec { s := good; s.Slot = v; return s }(),
			"path": func() CopySpec { s := good; s.FilePath = "/storage-pool/" + v; return s }(),
			"nqn":  func() CopySpec { s := good; s.NQN = "nqn.2000-02.com.mikrotik:" + v; return s }(),
		} {
			if cmd, err := DiskCopy(s); err == nil {
				t.Errorf("%s accepted %q: %s", name, v, cmd)
			} else if !IsKind(err, KindInvalid) {
				t.Errorf("%s(%q): error %v is not KindInvalid", name, v, err)
			}
		}
	}
	for _, port := range []int{0, -1, 65536} {
		s := good
		s.Port = port
		if _, err := DiskCopy(s); !IsKind(err, KindInvalid) {
			t.Errorf("port %d: %v, want KindInvalid", port, err)
		}
	}
}

// FuzzDiskCopyCannotBeInjected: a copy either refuses its values or lexes to
// exactly the intended arguments, the source only inside the [find].
func FuzzDiskCopyCannotBeInjected(f *testing.F) {
	for _, v := range hostile {
		f.Add(v, v, 4420, true)
	}
	f.Add("pvc-a", "snap-b", 4420, false)
	f.Fuzz(func(t *testing.T, from, v string, port int, export bool) {
		spec := CopySpec{From: from, Slot: v, FilePath: "/storage-pool/" + v + ".img"}
		want := map[string]string{"type": "file", "copy-from": "[group]", "file-path": spec.FilePath, "slot": v, "mount-filesystem": "no", "nvme-tcp-export": "no"}
		if export {
			spec.NQN, spec.Port = "nqn.2000-02.com.mikrotik:"+v, port
			want["nvme-tcp-export"], want["nvme-tcp-server-port"], want["nvme-tcp-server-nqn"] = "yes", fmt.Sprint(port), spec.NQN
		}
		if cmd, err := DiskCopy(spec); err == nil {
			checkShape(t, cmd, []string{"/disk", "add"}, want, map[string]string{"slot": from})
		}
	})
}
