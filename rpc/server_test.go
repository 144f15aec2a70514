package rpc

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in, network, address string
		wantErr              bool
	}{
		{"unix:///csi/csi.sock", "unix", "/csi/csi.sock", false},
		{"unix:/csi/csi.sock", "unix", "/csi/csi.sock", false},
		{"tcp://127.0.0.1:10000", "tcp", "127.0.0.1:10000", false},
		{"unix://", "", "", true},
		{"tcp://", "", "", true},
		{"http://x", "", "", true},
		{"/csi/csi.sock", "", "", true},
	}
	for _, tt := range tests {
		n, a, err := ParseEndpoint(tt.in)
		if (err != nil) != tt.wantErr || n != tt.network || a != tt.address {
			t.Errorf("ParseEndpoint(%q) = %q, %q, %v", tt.in, n, a, err)
		}
	}
}

func TestListenReplacesAStaleSocketButNothingElse(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "csi.sock")
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// Leave the socket file behind, as a killed process does.
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = stale.Close()
	lis, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	_ = lis.Close()

	file := filepath.Join(dir, "data")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("unix://" + file); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Fatal("regular file was touched")
	}
}
