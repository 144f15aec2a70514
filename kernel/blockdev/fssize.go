package blockdev

import (
	"context"
	"encoding/binary"
	"fmt"
)

// Superblock fields FilesystemSize reads (ext2/3/4: the superblock at 1024,
// little-endian; XFS: at 0, big-endian).
const (
	extSuper           = 1024
	extBlocksLo        = extSuper + 0x04
	extLogBlockSize    = extSuper + 0x18
	extMagic           = extSuper + 0x38
	extFeatureIncompat = extSuper + 0x60
	extBlocksHi        = extSuper + 0x150
	extIncompat64Bit   = 0x80
	xfsBlockSize       = 4
	xfsDataBlocks      = 8
)

// FilesystemSize reads the size in bytes of the ext2/3/4 or XFS filesystem on
// the device at path from its superblock, as the device holds it (not the
// page cache). It refuses anything else.
func FilesystemSize(ctx context.Context, path string) (int64, error) {
	sb, err := ReadHead(ctx, path, 4096)
	if err != nil {
		return 0, err
	}
	if len(sb) < 4096 {
		return 0, fmt.Errorf("filesystem size of %s: the device has only %d bytes", path, len(sb))
	}
	switch {
	case string(sb[0:4]) == "XFSB":
		bs := int64(binary.BigEndian.Uint32(sb[xfsBlockSize:]))
		blocks := binary.BigEndian.Uint64(sb[xfsDataBlocks:])
		if bs == 0 || blocks > uint64(1<<62)/uint64(bs) {
			return 0, fmt.Errorf("filesystem size of %s: implausible XFS superblock (%d blocks of %d bytes)", path, blocks, bs)
		}
		return int64(blocks) * bs, nil
	case binary.LittleEndian.Uint16(sb[extMagic:]) == 0xef53:
		logBS := binary.LittleEndian.Uint32(sb[extLogBlockSize:])
		if logBS > 6 {
			return 0, fmt.Errorf("filesystem size of %s: implausible ext block size 1024<<%d", path, logBS)
		}
		blocks := uint64(binary.LittleEndian.Uint32(sb[extBlocksLo:]))
		if binary.LittleEndian.Uint32(sb[extFeatureIncompat:])&extIncompat64Bit != 0 {
			blocks |= uint64(binary.LittleEndian.Uint32(sb[extBlocksHi:])) << 32
		}
		return int64(blocks) << (10 + logBS), nil
	}
	return 0, fmt.Errorf("filesystem size of %s: neither ext2/3/4 nor XFS", path)
}
