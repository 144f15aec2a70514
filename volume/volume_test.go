package volume

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

func TestSlotForKeepsShortSafeNamesAndHashesTheRest(t *testing.T) {
	tests := []struct {
		name string
		want string
	}{
		{"pvc-short", "pvc-short"},
		{"a", "a"},
		{strings.Repeat("x", 32), strings.Repeat("x", 32)},
		// The provisioner's default PV name is 40 characters: a readable head
		// and a hash of the whole name.
		{"pvc-1b4e28ba-2fa1-11d2-883f-0016d3cca427", "pvc-1b4e28ba-2fa1-11d2-" + hash8("pvc-1b4e28ba-2fa1-11d2-883f-0016d3cca427")},
		{"PVC-Upper", "pvc-upper-" + hash8("PVC-Upper")},
		{"sanity/with spaces", "sanity-with-spaces-" + hash8("sanity/with spaces")},
		{"---", "vol-" + hash8("---")},
		{"", "vol-" + hash8("")},
	}
	for _, tt := range tests {
		got := SlotFor(tt.name)
		if got != tt.want {
			t.Errorf("SlotFor(%q) = %q, want %q", tt.name, got, tt.want)
		}
		if len(got) > MaxSlotLen || !ValidID(got) {
			t.Errorf("SlotFor(%q) = %q is not a valid new slot", tt.name, got)
		}
	}
}

func hash8(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:4])
}

func TestSlotForTellsApartNamesThatShareTheirHead(t *testing.T) {
	a := SlotFor("pvc-1b4e28ba-2fa1-11d2-883f-0016d3cca427")
	b := SlotFor("pvc-1b4e28ba-2fa1-11d2-883f-0016d3cca428")
	if a == b {
		t.Fatalf("two PV names map to one slot %q", a)
	}
	// Case-folding must not merge names either.
	if SlotFor("Abc") == SlotFor("abc") {
		t.Fatalf("names differing in case share slot %q", SlotFor("abc"))
	}
}

func TestContextRoundTrips(t *testing.T) {
	in := Context{
		NQN:              "nqn.2000-02.com.mikrotik:pvc-a",
		Address:          "10.0.0.5",
		Port:             4420,
		Connect:          ConnectOptions{CtrlLossTmo: -1, ReconnectDelay: 2, KeepAliveTmo: 7, FastIOFailTmo: 30},
		MigrationTimeout: 600 * time.Second,
		CreatedBlank:     true,
		PVCNamespace:     "team-a",
		PVCName:          "data.db-0",
	}
	out, err := ParseContext(in.Map())
	if err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
}

func TestContextWithoutBlankMarkerIsNotBlank(t *testing.T) {
	c := Context{NQN: "nqn.2000-02.com.mikrotik:x", Address: "a", Port: 1, Connect: DefaultConnectOptions(), MigrationTimeout: DefaultMigrationTimeout}
	m := c.Map()
	if _, ok := m[KeyCreatedBlank]; ok {
		t.Fatalf("marker present for a volume not created blank: %v", m)
	}
	m[KeyCreatedBlank] = "yes" // anything but "true" is not the marker
	got, err := ParseContext(m)
	if err != nil {
		t.Fatal(err)
	}
	if got.CreatedBlank {
		t.Fatal("a malformed marker was taken as created-blank")
	}
}

func TestParseContextRejectsBadValuesNamingTheKey(t *testing.T) {
	base := Context{NQN: "nqn.2000-02.com.mikrotik:x", Address: "a", Port: 4420, Connect: DefaultConnectOptions(), MigrationTimeout: DefaultMigrationTimeout,
		PVCNamespace: "team-a", PVCName: "data"}.Map()
	tests := []struct {
		key, value string
	}{
		{KeyPort, "0"},
		{KeyPort, "70000"},
		{KeyPort, "x"},
		{KeyCtrlLossTmo, "-2"},
		{KeyReconnectDelay, "0"},
		{KeyKeepAliveTmo, "1.5"},
		{KeyFastIOFailTmo, "3601"},
		{KeyMigrationTimeout, "ten"},
		{KeyNQN, ""},
		{KeyAddress, ""},
		// The PVC keys come as a pair of valid Kubernetes names.
		{KeyPVCName, "Data"},
		{KeyPVCName, strings.Repeat("a", 254)},
		{KeyPVCNamespace, "team_a"},
		{KeyPVCNamespace, strings.Repeat("a", 64)},
		{KeyPVCNamespace, ""},
	}
	for _, tt := range tests {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		m[tt.key] = tt.value
		_, err := ParseContext(m)
		if err == nil || !strings.Contains(err.Error(), tt.key) {
			t.Errorf("%s=%q: error %v, want one naming %s", tt.key, tt.value, err, tt.key)
		}
	}
}

func TestAContextWithoutAPVCHasNoneAndCarriesNoKeys(t *testing.T) {
	c := Context{NQN: "nqn.2000-02.com.mikrotik:x", Address: "a", Port: 1, Connect: DefaultConnectOptions(), MigrationTimeout: DefaultMigrationTimeout}
	m := c.Map()
	for _, k := range []string{KeyPVCNamespace, KeyPVCName} {
		if _, ok := m[k]; ok {
			t.Errorf("key %s present for a volume without a PVC: %v", k, m)
		}
	}
	got, err := ParseContext(m)
	if err != nil {
		t.Fatal(err)
	}
	if got.PVCNamespace != "" || got.PVCName != "" {
		t.Fatalf("PVC %s/%s from a context without one", got.PVCNamespace, got.PVCName)
	}
}

func TestValidatePVC(t *testing.T) {
	tests := []struct {
		namespace, name string
		ok              bool
	}{
		{"", "", true},
		{"default", "data", true},
		{"kube-system", "www-web-0", true},
		{"a", "data.v2", true},
		{strings.Repeat("n", 63), strings.Repeat("p", 253), true},
		{"default", "", false},
		{"", "data", false},
		{"Default", "data", false},
		{"team.a", "data", false}, // a namespace is a label: no dots
		{"default", "-data", false},
		{"default", "data/../x", false},
		{"default", "da ta", false},
	}
	for _, tt := range tests {
		err := ValidatePVC(tt.namespace, tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidatePVC(%q, %q) = %v, want ok %v", tt.namespace, tt.name, err, tt.ok)
		}
	}
}

func TestParseMigrationTimeoutClamps(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"300", 300 * time.Second, false},
		{"30", 30 * time.Second, false},
		{"29", 30 * time.Second, false},
		{"0", 30 * time.Second, false},
		{"-5", 30 * time.Second, false},
		{"3600", 3600 * time.Second, false},
		{"3601", 3600 * time.Second, false},
		{"99999999999999", 3600 * time.Second, false},
		{" 45 ", 45 * time.Second, false},
		{"", 0, true},
		{"5m", 0, true},
		{"1e3", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseMigrationTimeout(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseMigrationTimeout(%q) = %v, %v; want %v, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
