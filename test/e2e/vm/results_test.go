package vm

import (
	"slices"
	"strings"
	"testing"
)

func TestParseConsole(t *testing.T) {
	// A console as the guest produces it: SeaBIOS escapes before the
	// kernel marker, a kernel message splitting a verdict line in two, a
	// subtest failure, and a test that never reported (the binary died).
	console := "\x1bc\x1b[?7lRDS-CSI-GUEST-KERNEL=6.12.117+deb12-amd64 multipath=Y\r\n" +
		"=== RUN   TestA\n" +
		"    a_test.go:1: hello\n" +
		"--- PA[    5.703233] nvme0c0n1: I/O Cmd(0x8) @ LBA 16368\n" +
		"SS: TestA (1.50s)\n" +
		"=== RUN   TestB\n" +
		"=== RUN   TestB/sub\n" +
		"    b_test.go:2: broken\n" +
		"    --- FAIL: TestB/sub (0.10s)\n" +
		"--- FAIL: TestB (0.20s)\n" +
		"=== RUN   TestC\n" +
		"--- SKIP: TestC (0.00s)\n" +
		"=== RUN   TestD\n" +
		"panic: boom\n" +
		"FAIL\n" +
		"RDS-CSI-GUEST-EXIT=2\n" +
		"[    9.1] reboot: Power down\n"
	r := ParseConsole(console)
	if r.Kernel != "6.12.117+deb12-amd64 multipath=Y" {
		t.Errorf("kernel %q", r.Kernel)
	}
	if r.ExitCode != 2 {
		t.Errorf("exit code %d, want 2", r.ExitCode)
	}
	var got []string
	for _, gt := range r.Tests {
		got = append(got, gt.Name+"="+gt.Status+gt.Elapsed)
	}
	want := []string{"TestA=PASS(1.50s)", "TestB=FAIL(0.20s)", "TestC=SKIP(0.00s)", "TestD="}
	if !slices.Equal(got, want) {
		t.Errorf("tests %v, want %v", got, want)
	}
	b := strings.Join(r.Tests[1].Output, "\n")
	if !strings.Contains(b, "broken") || !strings.Contains(b, "--- FAIL: TestB/sub") {
		t.Errorf("TestB's output lacks its subtest's failure:\n%s", b)
	}
	a := strings.Join(r.Tests[0].Output, "\n")
	if !strings.Contains(a, "nvme0c0n1: I/O Cmd") {
		t.Errorf("the kernel message that split TestA's verdict is lost:\n%s", a)
	}
	if d := r.Tests[3].Output; len(d) == 0 || !strings.Contains(strings.Join(d, "\n"), "panic: boom") {
		t.Errorf("TestD's output lacks the panic: %q", d)
	}
}

func TestParseConsoleWithoutEndMarker(t *testing.T) {
	r := ParseConsole("=== RUN   TestA\n[   1.000000] Kernel panic - not syncing\n")
	if r.ExitCode != -1 {
		t.Errorf("exit code %d, want -1 without the marker", r.ExitCode)
	}
	if !strings.Contains(r.Tail(5), "Kernel panic") {
		t.Errorf("tail %q", r.Tail(5))
	}
}
