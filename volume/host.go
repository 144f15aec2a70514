package volume

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
)

// hostNQNPrefix names the NQN namespace of rds-csi nodes (reverse domain of
// the driver name rds.csi.dev).
const hostNQNPrefix = "nqn.2026-11.dev.csi.rds:node:"

// maxNQNLen is the NVMe limit on an NQN, in bytes.
const maxNQNLen = 223

var nodeNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)

// HostNQN is the host NQN a node connects with, derived from its node ID
// (the Kubernetes node name) alone, so that the controller can compute the
// NQN of any node it fences without asking it. The name stays readable;
// a node name that does not fit in an NQN is shortened and made unique with
// a hash.
func HostNQN(nodeID string) string {
	if nodeNameRE.MatchString(nodeID) && len(hostNQNPrefix)+len(nodeID) <= maxNQNLen {
		return hostNQNPrefix + nodeID
	}
	sum := sha256.Sum256([]byte(nodeID))
	tag := hex.EncodeToString(sum[:8])
	head := []byte(nodeID)
	for i, c := range head {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '.' && c != '-' {
			head[i] = '-'
		}
	}
	room := maxNQNLen - len(hostNQNPrefix) - len(tag) - 1
	if len(head) > room {
		head = head[:room]
	}
	return hostNQNPrefix + string(head) + "-" + tag
}

// HostID is the host identifier (a UUID) a node connects with, derived from
// its node ID like HostNQN: stable across reboots and reinstalls, which a
// target needs to recognise a returning host.
func HostID(nodeID string) string {
	sum := sha256.Sum256([]byte("rds-csi host id\x00" + nodeID))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x80 // version 8: a name-based UUID of our own hashing
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
