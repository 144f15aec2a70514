package routeros

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"k8s.io/klog/v2"
)

// ErrHostKeyMismatch is wrapped by every refusal of the RDS host key, so a
// caller can tell a pinning problem (an operator must act) from an outage.
var ErrHostKeyMismatch = errors.New("RouterOS host key rejected")

const fingerprintPrefix = "SHA256:"

// HostKeyCallback returns how the RDS host key is verified. Exactly one of
// knownHostsFile (an OpenSSH known_hosts file; a non-22 port is written
// "[host]:port" there), fingerprint (as printed by ssh-keygen -lf, for
// example "SHA256:uS2j...") or insecure must be given: without a pinned key
// anyone on the path to the RDS could receive every command, and choosing
// two would leave it unclear which one is in force.
func HostKeyCallback(knownHostsFile, fingerprint string, insecure bool) (ssh.HostKeyCallback, error) {
	chosen := 0
	for _, given := range []bool{knownHostsFile != "", fingerprint != "", insecure} {
		if given {
			chosen++
		}
	}
	if chosen != 1 {
		return nil, errors.New("RouterOS host key: choose exactly one of a known_hosts file, a SHA256 fingerprint, or the insecure mode")
	}

	switch {
	case insecure:
		klog.Warning("RouterOS host key verification is DISABLED (insecure mode): anyone on the network path can impersonate the RDS and receive every command")
		return ssh.InsecureIgnoreHostKey(), nil
	case fingerprint != "":
		want, err := parseFingerprint(fingerprint)
		if err != nil {
			return nil, err
		}
		return func(host string, _ net.Addr, key ssh.PublicKey) error {
			got := ssh.FingerprintSHA256(key)
			if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
				return fmt.Errorf("%w: %s presented %s key %s, which is not the pinned fingerprint", ErrHostKeyMismatch, host, key.Type(), got)
			}
			return nil
		}, nil
	default:
		check, err := knownhosts.New(knownHostsFile)
		if err != nil {
			return nil, fmt.Errorf("RouterOS host key: reading known_hosts file %s: %w", knownHostsFile, err)
		}
		return func(host string, remote net.Addr, key ssh.PublicKey) error {
			err := check(host, remote, key)
			var keyErr *knownhosts.KeyError
			switch {
			case errors.As(err, &keyErr) && len(keyErr.Want) == 0:
				return fmt.Errorf("%w: %s is not listed in %s; it presented %s key %s", ErrHostKeyMismatch, host, knownHostsFile, key.Type(), ssh.FingerprintSHA256(key))
			case errors.As(err, &keyErr):
				return fmt.Errorf("%w: %s presented %s key %s, which does not match its entry in %s", ErrHostKeyMismatch, host, key.Type(), ssh.FingerprintSHA256(key), knownHostsFile)
			case err != nil:
				return fmt.Errorf("%w: %s presented %s key %s: %w", ErrHostKeyMismatch, host, key.Type(), ssh.FingerprintSHA256(key), err)
			}
			return nil
		}, nil
	}
}

// parseFingerprint accepts the OpenSSH SHA256 form with or without base64
// padding and returns it in the form ssh.FingerprintSHA256 prints, so a
// typo is caught at start-up instead of as a mismatch on every dial.
func parseFingerprint(fp string) (string, error) {
	fp = strings.TrimSpace(fp)
	if !strings.HasPrefix(fp, fingerprintPrefix) {
		return "", fmt.Errorf("RouterOS host key fingerprint %q: want the SHA256 form %q", fp, fingerprintPrefix+"<base64>")
	}
	encoded := strings.TrimRight(strings.TrimPrefix(fp, fingerprintPrefix), "=")
	sum, err := base64.RawStdEncoding.DecodeString(encoded)
	if err != nil || len(sum) != sha256.Size {
		return "", fmt.Errorf("RouterOS host key fingerprint %q: not a base64 SHA-256 digest", fp)
	}
	return fingerprintPrefix + encoded, nil
}
