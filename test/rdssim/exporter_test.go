package rdssim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// recordingExporter notes every call; it refuses to export the slot "bad".
type recordingExporter struct {
	mu    sync.Mutex
	calls []string
}

func (r *recordingExporter) note(op string, d Disk) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("%s %s %d %s", op, d.Slot, d.Size, d.AllowHostName))
	if op == "export" && d.Slot == "bad" {
		return errors.New("port busy")
	}
	if _, err := os.Stat(d.BackingFile); err != nil {
		return err
	}
	return nil
}

func (r *recordingExporter) Export(d Disk) error   { return r.note("export", d) }
func (r *recordingExporter) Unexport(d Disk) error { return r.note("unexport", d) }
func (r *recordingExporter) Resize(d Disk) error   { return r.note("resize", d) }

func (r *recordingExporter) take() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := strings.Join(r.calls, "; ")
	r.calls = nil
	return s
}

func TestExporterIsToldAtTheRightMoments(t *testing.T) {
	exp := &recordingExporter{}
	key := newSigner(t)
	cfg := Config{StateDir: t.TempDir(), AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}, Exporter: exp}
	f := startWith(t, key, cfg)
	c := f.dial(t, "")
	plain := `/disk add type=file file-path="/storage-pool/b.img" file-size=1G slot="b" nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:b"`
	steps := []struct {
		cmd, want string
	}{
		{addCmd("a", "1G"), "export a 1073741824 "},
		{plain, ""},
		{`/disk set [find slot="b"] nvme-tcp-export=yes`, "export b 1073741824 "},
		{`/disk set [find slot="a"] file-size=2G`, "resize a 2147483648 "},
		{`/disk set [find slot="a"] nvme-tcp-server-allow-host-name="h1"`, "export a 2147483648 h1"},
		{`/disk set [find slot="a"] nvme-tcp-server-allow-host-name="h1"`, ""},
		{`/disk set [find slot="b"] nvme-tcp-export=no`, "unexport b 1073741824 "},
		{`/disk set [find slot="b"] file-size=2G`, ""},
		{`/disk remove [find slot="b"]`, ""},
		{addCmd("c", "1G"), "export c 1073741824 "},
		{`/disk remove [find slot="a"]`, "unexport a 2147483648 h1"},
	}
	for _, s := range steps {
		ok(t, c, s.cmd)
		if got := exp.take(); got != s.want {
			t.Errorf("%s: exporter calls %q, want %q", s.cmd, got, s.want)
		}
	}

	// A failed export fails the command and leaves nothing behind.
	r := exec(t, c, addCmd("bad", "1G"))
	if r.stdout != fmt.Sprintf(ErrTextExportFailed, "port busy")+"\r\n" {
		t.Errorf("failed export: %q", r.stdout)
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "files", "storage-pool", "csi", "bad.img")); !os.IsNotExist(err) {
		t.Errorf("a failed add left its file: %v", err)
	}
	if got := f.sim.Disks(); len(got) != 1 || got[0].Slot != "c" {
		t.Errorf("disks after a failed add: %+v", got)
	}
	exp.take()

	// A restart exports again what was exported.
	_ = c.Close()
	_ = f.sim.Close()
	startWith(t, key, cfg)
	if got := exp.take(); got != "export c 1073741824 " {
		t.Errorf("restart: exporter calls %q", got)
	}
}
