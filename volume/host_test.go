package volume

import (
	"regexp"
	"strings"
	"testing"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestHostNQNIsReadableForOrdinaryNodeNames(t *testing.T) {
	if got := HostNQN("worker-1.example.com"); got != "nqn.2026-11.dev.csi.rds:node:worker-1.example.com" {
		t.Fatalf("HostNQN = %q", got)
	}
}

func TestHostNQNStaysAValidDistinctNQNForAnyNodeID(t *testing.T) {
	long := strings.Repeat("a", 250)
	seen := map[string]string{}
	for _, id := range []string{long, long + "b", "Upper", "upper", "with space", ""} {
		n := HostNQN(id)
		if len(n) > 223 || !strings.HasPrefix(n, hostNQNPrefix) || strings.ContainsAny(n, " ,=") {
			t.Errorf("HostNQN(%q) = %q is not a usable NQN", id, n)
		}
		if other, dup := seen[n]; dup {
			t.Errorf("node IDs %q and %q share host NQN %q", other, id, n)
		}
		seen[n] = id
	}
}

func TestHostIDIsAStableUUIDPerNode(t *testing.T) {
	a, b := HostID("node-a"), HostID("node-b")
	if !uuidRE.MatchString(a) || !uuidRE.MatchString(b) {
		t.Fatalf("not UUIDs: %q %q", a, b)
	}
	if a == b {
		t.Fatal("two nodes share a host ID")
	}
	if HostID("node-a") != a {
		t.Fatal("host ID changed between calls")
	}
}
