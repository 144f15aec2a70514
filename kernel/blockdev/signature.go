package blockdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rds-csi/rds-csi/kernel/command"
)

// headSize is how much of a device HasSignature requires to be zero.
const headSize = 1 << 20

const blkidTimeout = 10 * time.Second

// runTool is command.Run, replaced in tests to make blkid misbehave.
var runTool = command.Run

// HasSignature is the gate in front of mkfs. It decides whether the device at
// path might hold data, and it fails closed: every doubt is either found=true
// or an error, never a "blank" answer.
//
// A volume the appliance has just created reads back as zeros, so the first
// MiB must be entirely zero: any non-zero byte there is found=true, named
// after the signature when it is a known one. That catches filesystems,
// partition tables, LVM, LUKS and swap even when blkid does not know them,
// and it catches a device that returns garbage. A read error is an error, so
// a device that cannot be read back is never formatted.
//
// A zero first MiB is then confirmed by `blkid -p`, which also knows
// signatures that live elsewhere (at the end of the device, for example):
// exit 2 (nothing found) is blank; exit 0 is found=true with the TYPE it
// names; anything else, blkid missing or timing out included, is an error.
func HasSignature(ctx context.Context, path string) (found bool, what string, err error) {
	head, err := ReadHead(ctx, path, headSize)
	if err != nil {
		return false, "", fmt.Errorf("signature check of %s: %w", path, err)
	}
	if !isZero(head) {
		return true, recognise(head), nil
	}

	stdout, _, err := runTool(ctx, blkidTimeout, "blkid", "-p", "-o", "export", path)
	var exitErr *command.ExitError
	switch {
	case err == nil:
		return true, blkidType(stdout), nil
	case errors.As(err, &exitErr) && exitErr.Code == 2:
		return false, "", nil
	default:
		return false, "", fmt.Errorf("signature check of %s: blkid could not vouch for a blank device: %w", path, err)
	}
}

// FilesystemType is the TYPE `blkid -p` gives the device, "" when it finds
// nothing. Unlike the magic bytes HasSignature reads, blkid's probe checks
// the superblock as a whole (its checksum, where the filesystem has one), so
// it tells a finished filesystem from the start of an interrupted mkfs.
func FilesystemType(ctx context.Context, path string) (string, error) {
	stdout, _, err := runTool(ctx, blkidTimeout, "blkid", "-p", "-o", "export", path)
	var exitErr *command.ExitError
	switch {
	case err == nil:
		for line := range strings.Lines(string(stdout)) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "TYPE="); ok {
				return v, nil
			}
		}
		return "", fmt.Errorf("blkid probe of %s: a signature without a TYPE (%q)", path, stdout)
	case errors.As(err, &exitErr) && exitErr.Code == 2 && exitErr.Stderr == "":
		return "", nil
	default:
		// Exit 2 with a complaint is blkid failing to open or read the
		// device, not finding nothing.
		return "", fmt.Errorf("blkid probe of %s: %w", path, err)
	}
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// signatures are checked in order: GPT before MBR because a GPT disk also
// carries a protective MBR.
var signatures = []struct {
	name   string
	offset int
	magic  []byte
}{
	{"xfs", 0, []byte("XFSB")},
	{"crypto_LUKS", 0, []byte("LUKS\xba\xbe")},
	{"ext2/3/4", 0x438, []byte{0x53, 0xef}},
	{"btrfs", 0x10040, []byte("_BHRfS_M")},
	{"LVM2_member", 512, []byte("LABELONE")},
	{"gpt partition table", 512, []byte("EFI PART")},
	{"swap", 4096 - 10, []byte("SWAPSPACE2")},
	{"swap", 4096 - 10, []byte("SWAP-SPACE")},
	{"dos partition table or boot sector", 510, []byte{0x55, 0xaa}},
}

// recognise names the first known signature in a non-zero head.
func recognise(head []byte) string {
	for _, s := range signatures {
		if end := s.offset + len(s.magic); end <= len(head) && bytes.Equal(head[s.offset:end], s.magic) {
			return s.name
		}
	}
	return UnknownData
}

// UnknownData is what HasSignature calls bytes in the first MiB that carry
// none of the signatures it knows.
const UnknownData = "data in the first MiB"

// blkidType picks the most telling key of blkid's export output.
func blkidType(out []byte) string {
	values := map[string]string{}
	for line := range strings.Lines(string(out)) {
		if key, value, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			values[key] = value
		}
	}
	for _, key := range []string{"TYPE", "PTTYPE", "PART_ENTRY_SCHEME"} {
		if v := values[key]; v != "" {
			return v + " (blkid)"
		}
	}
	return "unnamed signature (blkid)"
}
