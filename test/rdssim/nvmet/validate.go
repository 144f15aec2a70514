package nvmet

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/rds-csi/rds-csi/test/rdssim"
)

// maxNQNLen is NVMe's limit (NVMF_NQN_SIZE is 223 plus the terminator).
const maxNQNLen = 223

// checkNQN accepts the characters NQNs are made of in practice. Everything
// is stricter than the kernel, because an NQN becomes a configfs directory
// name: no '/', no spaces, no newline the kernel would cut at, and a first
// character that is not '.' so "." and ".." are impossible.
func checkNQN(what, nqn string) error {
	if nqn == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(nqn) > maxNQNLen {
		return fmt.Errorf("%s is %d bytes, more than %d", what, len(nqn), maxNQNLen)
	}
	for i, c := range nqn {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '-' || c == ':' || c == '_'
		if !ok || i == 0 && !isAlnum(c) {
			return fmt.Errorf("%s %q: character %q at %d is not allowed", what, nqn, c, i)
		}
	}
	return nil
}

func isAlnum(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func checkPort(port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("port %d is not in 1..65535", port)
	}
	return nil
}

// checkBackingFile insists on a clean absolute path to an existing regular
// file: the kernel cuts device_path at the first newline and resolves it
// itself, so anything looser could make it open a different file.
func checkBackingFile(path string) error {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return fmt.Errorf("backing file %q is not a clean absolute path", path)
	}
	if strings.ContainsFunc(path, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return fmt.Errorf("backing file %q contains control characters", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("backing file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("backing file %s is not a regular file", path)
	}
	return nil
}

// allowedHosts reads the disk's allow-host-name as host NQNs. How the RDS
// itself interprets nvme-tcp-server-allow-host-name is not verified: it
// might take one host NQN, a list, or a name that is not an NQN at all. The
// simulator treats it as a comma-separated list of host NQNs, the reading
// that lets a driver restrict a volume to the nodes that use it. Empty
// means any host.
func allowedHosts(value string) ([]string, error) {
	if value == "" {
		return nil, nil
	}
	var hosts []string
	seen := map[string]bool{}
	for _, h := range strings.Split(value, ",") {
		if err := checkNQN("allowed host", h); err != nil {
			return nil, err
		}
		if !seen[h] {
			seen[h] = true
			hosts = append(hosts, h)
		}
	}
	return hosts, nil
}

// checkDisk validates everything Export writes, before it writes anything.
func checkDisk(d rdssim.Disk) ([]string, error) {
	if err := checkNQN("subsystem NQN", d.NQN); err != nil {
		return nil, err
	}
	hosts, err := allowedHosts(d.AllowHostName)
	return hosts, errors.Join(err, checkPort(d.Port), checkBackingFile(d.BackingFile))
}

// checkAddr accepts only an IPv4 literal, because ports are set up with
// adrfam ipv4.
func checkAddr(addr string) error {
	ip := net.ParseIP(addr)
	if ip == nil || ip.To4() == nil || strings.Contains(addr, ":") {
		return fmt.Errorf("address %q is not an IPv4 address", addr)
	}
	return nil
}
