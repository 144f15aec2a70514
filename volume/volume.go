// Package volume is the vocabulary the controller and the node agent share:
// how a volume is named on the RDS, and the volume context that carries
// everything the node needs from CreateVolume to NodeStageVolume.
package volume

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// MaxSlotLen is the longest slot name RouterOS 7.24 accepts for a new disk.
const MaxSlotLen = 32

// DefaultNQNPrefix is the NQN namespace of RDS disks. Subsystem NQNs are this
// prefix plus the slot, the convention the earlier driver used too, so its
// volumes can be adopted.
const DefaultNQNPrefix = "nqn.2000-02.com.mikrotik:"

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidID reports whether id can be a volume ID: the disk's slot name, which
// may be a 40-character slot of the earlier driver.
func ValidID(id string) bool { return idRE.MatchString(id) }

// SlotFor derives the RDS slot name (and so the volume ID) from a CSI volume
// name, deterministically, so that a retried CreateVolume finds its disk.
// Names that fit are kept (lower-cased, unsafe characters replaced by '-');
// longer ones keep a readable head and end in 8 hex digits of the full name's
// SHA-256, which tells apart names that share the head:
// "pvc-1b4e28ba-2fa1-11d2-883f-0016d3cca427" -> "pvc-1b4e28ba-2fa1-11d2-<hash>".
func SlotFor(name string) string {
	clean := []byte(strings.ToLower(name))
	for i, c := range clean {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			clean[i] = '-'
		}
	}
	slot := strings.TrimLeft(string(clean), "-")
	// Only a name kept exactly is used bare: one that had to be changed could
	// meet another name changed into the same text.
	if slot != "" && len(slot) <= MaxSlotLen && slot == name {
		return slot
	}
	sum := sha256.Sum256([]byte(name))
	const hashLen = 8
	head := slot
	if len(head) > MaxSlotLen-hashLen-1 {
		head = head[:MaxSlotLen-hashLen-1]
	}
	head = strings.TrimRight(head, "-")
	if head == "" {
		head = "vol"
	}
	return head + "-" + hex.EncodeToString(sum[:])[:hashLen]
}

// DefaultFSType is the filesystem the node makes on a mount volume whose
// capability names none; the controller sizes such a volume for it.
const DefaultFSType = "ext4"

// NQN is the subsystem NQN of the disk in slot.
func NQN(prefix, slot string) string { return prefix + slot }

// Context keys. They end up in every PV's spec.csi.volumeAttributes, so they
// are part of the on-disk format: never rename one.
const (
	KeyNQN              = "nqn"
	KeyAddress          = "address"
	KeyPort             = "port"
	KeyCtrlLossTmo      = "ctrlLossTmo"
	KeyReconnectDelay   = "reconnectDelay"
	KeyKeepAliveTmo     = "keepAliveTmo"
	KeyFastIOFailTmo    = "fastIoFailTmo"
	KeyMigrationTimeout = "migrationTimeoutSeconds"
	// KeyCreatedBlank marks a volume the controller created empty. The node
	// formats only volumes that carry it (and then only after reading the
	// device and finding no signature).
	KeyCreatedBlank = "createdBlank"
	// KeyPVCNamespace and KeyPVCName name the claim the volume was created
	// for (the csi-provisioner passes them with --extra-create-metadata), so
	// that the node can record Events on it. Volumes created without them
	// carry neither, and get no Events.
	KeyPVCNamespace = "pvcNamespace"
	KeyPVCName      = "pvcName"
)

// ConnectOptions are the NVMe-oF fabrics tunables for a volume, in seconds.
// -1 means "forever" for CtrlLossTmo and "off" for FastIOFailTmo.
type ConnectOptions struct {
	CtrlLossTmo    int
	ReconnectDelay int
	KeepAliveTmo   int
	FastIOFailTmo  int
}

// DefaultConnectOptions never give a controller up (ctrl_loss_tmo=-1),
// retry every 5 s, keep the kernel's keep-alive, and never fail queued I/O
// early: the agent, not a timer, decides when a volume is lost.
func DefaultConnectOptions() ConnectOptions {
	return ConnectOptions{CtrlLossTmo: -1, ReconnectDelay: 5, KeepAliveTmo: 5, FastIOFailTmo: -1}
}

// Migration timeout bounds.
const (
	DefaultMigrationTimeout = 300 * time.Second
	MinMigrationTimeout     = 30 * time.Second
	MaxMigrationTimeout     = 3600 * time.Second
)

// Context is the typed volume context.
type Context struct {
	NQN              string
	Address          string
	Port             int
	Connect          ConnectOptions
	MigrationTimeout time.Duration
	CreatedBlank     bool
	// PVCNamespace and PVCName are both set or both empty (unknown).
	PVCNamespace, PVCName string
}

// Map renders c as volume context attributes.
func (c Context) Map() map[string]string {
	m := map[string]string{
		KeyNQN:              c.NQN,
		KeyAddress:          c.Address,
		KeyPort:             strconv.Itoa(c.Port),
		KeyCtrlLossTmo:      strconv.Itoa(c.Connect.CtrlLossTmo),
		KeyReconnectDelay:   strconv.Itoa(c.Connect.ReconnectDelay),
		KeyKeepAliveTmo:     strconv.Itoa(c.Connect.KeepAliveTmo),
		KeyFastIOFailTmo:    strconv.Itoa(c.Connect.FastIOFailTmo),
		KeyMigrationTimeout: strconv.Itoa(int(c.MigrationTimeout / time.Second)),
	}
	if c.CreatedBlank {
		m[KeyCreatedBlank] = "true"
	}
	if c.PVCName != "" {
		m[KeyPVCNamespace], m[KeyPVCName] = c.PVCNamespace, c.PVCName
	}
	return m
}

// ParseContext reads a volume context written by Map. Missing tunables take
// their defaults; a present but malformed value is an error naming the key.
func ParseContext(m map[string]string) (Context, error) {
	c := Context{
		NQN:              m[KeyNQN],
		Address:          m[KeyAddress],
		Connect:          DefaultConnectOptions(),
		MigrationTimeout: DefaultMigrationTimeout,
		CreatedBlank:     m[KeyCreatedBlank] == "true",
		PVCNamespace:     m[KeyPVCNamespace],
		PVCName:          m[KeyPVCName],
	}
	if c.NQN == "" {
		return Context{}, fmt.Errorf("volume context: %s is missing", KeyNQN)
	}
	if c.Address == "" {
		return Context{}, fmt.Errorf("volume context: %s is missing", KeyAddress)
	}
	port, err := ParsePort(m[KeyPort])
	if err != nil {
		return Context{}, fmt.Errorf("volume context: %s: %w", KeyPort, err)
	}
	c.Port = port
	if err := c.Connect.Set(m); err != nil {
		return Context{}, fmt.Errorf("volume context: %w", err)
	}
	if v, ok := m[KeyMigrationTimeout]; ok {
		if c.MigrationTimeout, err = ParseMigrationTimeout(v); err != nil {
			return Context{}, fmt.Errorf("volume context: %s: %w", KeyMigrationTimeout, err)
		}
	}
	if err := ValidatePVC(c.PVCNamespace, c.PVCName); err != nil {
		return Context{}, fmt.Errorf("volume context: %s and %s: %w", KeyPVCNamespace, KeyPVCName, err)
	}
	return c, nil
}

// ValidatePVC checks a claim's namespace (a DNS-1123 label) and name (a
// DNS-1123 subdomain), as Kubernetes does. Both empty is valid: the claim is
// unknown. One without the other is not.
func ValidatePVC(namespace, name string) error {
	switch {
	case namespace == "" && name == "":
		return nil
	case namespace == "" || name == "":
		return fmt.Errorf("PVC namespace %q and name %q: both or neither are needed", namespace, name)
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return fmt.Errorf("PVC namespace %q: %s", namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("PVC name %q: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

// Set overrides the options present in m (StorageClass parameters or a
// volume context use the same keys), validating each.
func (o *ConnectOptions) Set(m map[string]string) error {
	fields := []struct {
		key      string
		dst      *int
		min, max int
	}{
		{KeyCtrlLossTmo, &o.CtrlLossTmo, -1, 86400},
		{KeyReconnectDelay, &o.ReconnectDelay, 1, 3600},
		{KeyKeepAliveTmo, &o.KeepAliveTmo, 1, 3600},
		{KeyFastIOFailTmo, &o.FastIOFailTmo, -1, 3600},
	}
	for _, f := range fields {
		v, ok := m[f.key]
		if !ok {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < f.min || n > f.max {
			return fmt.Errorf("%s=%q: want an integer number of seconds from %d to %d", f.key, v, f.min, f.max)
		}
		*f.dst = n
	}
	return nil
}

// ParsePort parses a TCP port number.
func ParsePort(v string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a TCP port (1-65535)", v)
	}
	return n, nil
}

// ParseMigrationTimeout parses whole seconds and clamps them to 30..3600:
// a value out of range is corrected rather than refused, because the
// StorageClass that carries it cannot be edited once volumes exist.
func ParseMigrationTimeout(v string) (time.Duration, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("%q is not a whole number of seconds", v)
	}
	n = min(max(n, int(MinMigrationTimeout/time.Second)), int(MaxMigrationTimeout/time.Second))
	return time.Duration(n) * time.Second, nil
}
