package workload

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteSyncedReplacesTheFileWithTheData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "commit")
	for _, data := range []string{"a longer first version", "second"} {
		if err := WriteSynced(path, []byte(data)); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(path); err != nil || string(got) != data {
			t.Fatalf("read back %q, %v; wrote %q", got, err, data)
		}
	}
	if err := WriteSynced(filepath.Join(t.TempDir(), "missing", "dir", "f"), nil); err == nil {
		t.Fatal("a write into a missing directory succeeded")
	}
}
