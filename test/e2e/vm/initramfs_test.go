package vm

import (
	"strings"
	"testing"
)

// TestInitScriptPlain: a test binary gets -test.v first, a plain program
// must not (its flag parser would reject it), and both report their exit
// code after EndMarker.
func TestInitScriptPlain(t *testing.T) {
	test := (&Initramfs{TestArgs: []string{"-test.run=X"}}).initScript()
	if !strings.Contains(test, "/e2e.test '-test.v' '-test.run=X'") {
		t.Errorf("test binary command line missing:\n%s", test)
	}
	plain := (&Initramfs{TestArgs: []string{"-x"}, Plain: true}).initScript()
	if strings.Contains(plain, "-test.v") || !strings.Contains(plain, "/e2e.test '-x'") {
		t.Errorf("plain program command line wrong:\n%s", plain)
	}
	for _, s := range []string{test, plain} {
		if !strings.Contains(s, EndMarker+"$rc") {
			t.Errorf("no end marker:\n%s", s)
		}
	}
}
