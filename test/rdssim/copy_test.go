package rdssim

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// With a copy delay, copy-from returns at once and the copy shows a growing
// size= until it reaches the source's, then it is exported; its data is the
// source's.
func TestADelayedCopyGrowsInTheBackgroundAndIsExportedWhenDone(t *testing.T) {
	exp := &recordingExporter{}
	key := newSigner(t)
	f := startWith(t, key, Config{StateDir: t.TempDir(), AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}, Exporter: exp, CopyDelay: time.Second})
	c := f.dial(t, "ct4096w")
	ok(t, c, addCmd("src", "64M"))
	src := filepath.Join(f.cfg.StateDir, "files", "storage-pool", "csi", "src.img")
	payload := []byte("written before the copy")
	fh, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt(payload, 60<<20); err != nil {
		t.Fatal(err)
	}
	_ = fh.Close()
	exp.take()

	start := time.Now()
	ok(t, c, `/disk add type=file copy-from=[find slot="src"] file-path="/storage-pool/snap/copy.img" slot="copy" nvme-tcp-export=yes nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:copy"`)
	if time.Since(start) > 500*time.Millisecond {
		t.Fatalf("a delayed copy-from took %s to return", time.Since(start))
	}
	out := ok(t, c, `/disk print detail where slot="copy"`)
	if strings.Contains(out, " size=67 108 864 ") {
		t.Fatalf("the copy shows its full size at once:\n%s", out)
	}
	if got := exp.take(); got != "" {
		t.Fatalf("exporter told %q while copying", got)
	}
	// Changing or copying a disk under copy is not simulated: refused.
	if r := exec(t, c, `/disk set [find slot="copy"] file-size=128M`); !strings.Contains(r.stdout, "not simulated") {
		t.Fatalf("set during the copy: %+v", r)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(ok(t, c, `/disk print detail where slot="copy"`), " size=67 108 864 ") {
		if time.Now().After(deadline) {
			t.Fatal("the copy never completed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := exp.take(); !strings.HasPrefix(got, "export copy 67108864") {
		t.Fatalf("exporter calls after the copy: %q", got)
	}
	data, err := os.ReadFile(filepath.Join(f.cfg.StateDir, "files", "storage-pool", "snap", "copy.img"))
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 64<<20 || !bytes.Equal(data[60<<20:60<<20+len(payload)], payload) {
		t.Fatalf("copy has %d bytes; payload present: %v", len(data), bytes.Contains(data, payload))
	}
}

// Removing a disk under copy stops the copy and leaves its partial file, as
// /disk remove always leaves the file.
func TestRemovingADiskUnderCopyStopsTheCopy(t *testing.T) {
	f := start(t, func(c *Config) { c.CopyDelay = time.Second })
	c := f.dial(t, "ct4096w")
	ok(t, c, addCmd("src", "64M"))
	ok(t, c, `/disk add type=file copy-from=[find slot="src"] file-path="/storage-pool/snap/copy.img" slot="copy"`)
	ok(t, c, `/disk remove [find slot="copy"]`)
	time.Sleep(1500 * time.Millisecond)
	info, err := os.Stat(filepath.Join(f.cfg.StateDir, "files", "storage-pool", "snap", "copy.img"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Size() == 64<<20 {
		t.Fatal("the copy went on after its disk was removed")
	}
	if strings.Contains(ok(t, c, `/disk print detail`), `slot="copy"`) {
		t.Fatal("the removed copy came back")
	}
}
