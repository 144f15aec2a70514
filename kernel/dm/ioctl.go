package dm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// The layout below is version 4 of the device-mapper ioctl interface
// (include/uapi/linux/dm-ioctl.h). Every request is one buffer: a fixed
// header, then a command-specific payload starting at data_start.
const (
	ioctlType = 0xfd

	headerSize = 312 // sizeof(struct dm_ioctl)
	specSize   = 40  // sizeof(struct dm_target_spec)
	nameLen    = 128 // DM_NAME_LEN, NUL included
	uuidLen    = 129 // DM_UUID_LEN, NUL included
	typeLen    = 16  // DM_MAX_TYPE_NAME, NUL included

	// Field offsets in struct dm_ioctl.
	offVersion     = 0
	offDataSize    = 12
	offDataStart   = 16
	offTargetCount = 20
	offOpenCount   = 24
	offFlags       = 28
	offEventNr     = 32
	offDev         = 40
	offName        = 48
	offUUID        = offName + nameLen // 176

	// Field offsets in struct dm_target_spec.
	offSpecStart  = 0
	offSpecLength = 8
	offSpecStatus = 16
	offSpecNext   = 20
	offSpecType   = 24
)

// The interface version sent with every request. The kernel accepts any
// request whose major matches and whose minor is not newer than its own.
// Flags are not gated on the minor sent: DM_NOFLUSH_FLAG works on every
// interface since 4.12, far older than any kernel the driver supports.
var interfaceVersion = [3]uint32{4, 0, 0}

// Command numbers, the nr part of each _IOWR(DM_IOCTL, nr, struct dm_ioctl).
const (
	cmdVersion     = 0
	cmdRemoveAll   = 1
	cmdListDevices = 2
	cmdDevCreate   = 3
	cmdDevRemove   = 4
	cmdDevRename   = 5
	cmdDevSuspend  = 6
	cmdDevStatus   = 7
	cmdDevWait     = 8
	cmdTableLoad   = 9
	cmdTableClear  = 10
	cmdTableDeps   = 11
	cmdTableStatus = 12
	cmdListVersion = 13
	cmdTargetMsg   = 14
)

// Flags in dm_ioctl.flags.
const (
	flagSuspend       = 1 << 1  // DM_SUSPEND_FLAG: with DM_DEV_SUSPEND, suspend rather than resume
	flagStatusTable   = 1 << 4  // DM_STATUS_TABLE_FLAG: DM_TABLE_STATUS returns the table, not the status
	flagActivePresent = 1 << 5  // DM_ACTIVE_PRESENT_FLAG (out)
	flagBufferFull    = 1 << 8  // DM_BUFFER_FULL_FLAG (out): the answer did not fit
	flagNoFlush       = 1 << 11 // DM_NOFLUSH_FLAG: suspend without flushing queued I/O
)

// request is the ioctl request number of command nr: _IOWR, that is
// direction read|write (3) in bits 30-31, the argument size in bits 16-29,
// the type in bits 8-15 and nr in bits 0-7.
func request(nr uint32) uint32 {
	const iocReadWrite = 3
	return iocReadWrite<<30 | headerSize<<16 | ioctlType<<8 | nr
}

var errShort = errors.New("answer shorter than its header says")

// header is the part of struct dm_ioctl this package reads or writes.
type header struct {
	version     [3]uint32
	dataSize    uint32
	dataStart   uint32
	targetCount uint32
	openCount   int32
	flags       uint32
	eventNr     uint32
	dev         uint64
	name        string
}

// newBuffer returns a request for name with payload after the header and at
// least capacity bytes of room for the kernel's answer (headerSize included).
func newBuffer(name string, flags uint32, targetCount int, payload []byte, capacity int) []byte {
	size := max(align8(headerSize+len(payload)), align8(capacity))
	buf := make([]byte, size)
	h := header{
		version:     interfaceVersion,
		dataSize:    uint32(size),
		dataStart:   headerSize,
		targetCount: uint32(targetCount),
		flags:       flags,
		name:        name,
	}
	h.put(buf)
	copy(buf[headerSize:], payload)
	return buf
}

func (h header) put(b []byte) {
	ne := binary.NativeEndian
	for i, v := range h.version {
		ne.PutUint32(b[offVersion+4*i:], v)
	}
	ne.PutUint32(b[offDataSize:], h.dataSize)
	ne.PutUint32(b[offDataStart:], h.dataStart)
	ne.PutUint32(b[offTargetCount:], h.targetCount)
	ne.PutUint32(b[offOpenCount:], uint32(h.openCount))
	ne.PutUint32(b[offFlags:], h.flags)
	ne.PutUint32(b[offEventNr:], h.eventNr)
	ne.PutUint64(b[offDev:], h.dev)
	putString(b[offName:offName+nameLen], h.name)
}

func parseHeader(b []byte) (header, error) {
	if len(b) < headerSize {
		return header{}, fmt.Errorf("dm_ioctl of %d bytes: %w", len(b), errShort)
	}
	ne := binary.NativeEndian
	var h header
	for i := range h.version {
		h.version[i] = ne.Uint32(b[offVersion+4*i:])
	}
	h.dataSize = ne.Uint32(b[offDataSize:])
	h.dataStart = ne.Uint32(b[offDataStart:])
	h.targetCount = ne.Uint32(b[offTargetCount:])
	h.openCount = int32(ne.Uint32(b[offOpenCount:]))
	h.flags = ne.Uint32(b[offFlags:])
	h.eventNr = ne.Uint32(b[offEventNr:])
	h.dev = ne.Uint64(b[offDev:])
	h.name = cString(b[offName : offName+nameLen])
	return h, nil
}

// encodeTable lays out table as DM_TABLE_LOAD reads it: each dm_target_spec
// followed by its NUL-terminated parameters, padded so the next spec is
// 8-byte aligned; each spec's next is the distance to the following one.
func encodeTable(table []Target) []byte {
	var out []byte
	ne := binary.NativeEndian
	for _, t := range table {
		entry := make([]byte, align8(specSize+len(t.Params)+1))
		ne.PutUint64(entry[offSpecStart:], t.Start)
		ne.PutUint64(entry[offSpecLength:], t.Length)
		ne.PutUint32(entry[offSpecNext:], uint32(len(entry)))
		putString(entry[offSpecType:offSpecType+typeLen], t.Type)
		copy(entry[specSize:], t.Params)
		out = append(out, entry...)
	}
	return out
}

// decodeTargets reads the count specs of a DM_TABLE_STATUS answer. data
// starts at the answer's data_start; there each spec's next is counted from
// the start of data, not from the spec, unlike in a load.
func decodeTargets(data []byte, count uint32) ([]Target, error) {
	ne := binary.NativeEndian
	var out []Target
	off := 0
	for i := uint32(0); i < count; i++ {
		if off < 0 || off+specSize > len(data) {
			return nil, fmt.Errorf("target %d at offset %d of %d bytes: %w", i, off, len(data), errShort)
		}
		spec := data[off : off+specSize]
		rest := data[off+specSize:]
		n := 0
		for n < len(rest) && rest[n] != 0 {
			n++
		}
		if n == len(rest) {
			return nil, fmt.Errorf("target %d: parameters not terminated: %w", i, errShort)
		}
		out = append(out, Target{
			Start:  ne.Uint64(spec[offSpecStart:]),
			Length: ne.Uint64(spec[offSpecLength:]),
			Type:   cString(spec[offSpecType : offSpecType+typeLen]),
			// Targets end their status with a space; it carries nothing.
			Params: strings.TrimRight(string(rest[:n]), " "),
		})
		next := int(ne.Uint32(spec[offSpecNext:]))
		if i+1 < count && next <= off {
			return nil, fmt.Errorf("target %d: next offset %d does not move forward from %d", i, next, off)
		}
		off = next
	}
	return out, nil
}

// encodeMessage lays out struct dm_target_msg: the sector that selects the
// target, then the NUL-terminated message.
func encodeMessage(sector uint64, msg string) []byte {
	b := make([]byte, align8(8+len(msg)+1))
	binary.NativeEndian.PutUint64(b, sector)
	copy(b[8:], msg)
	return b
}

// encodeDev and decodeDev convert a device number to and from the kernel's
// huge_encode_dev form that dm_ioctl.dev carries: minor bits 0-7 in bits
// 0-7, the major in bits 8-19, minor bits 8-19 in bits 20-31.
func encodeDev(major, minor uint32) uint64 {
	return uint64(minor&0xff) | uint64(major&0xfff)<<8 | uint64(minor&^0xff)<<12
}

func decodeDev(dev uint64) (major, minor uint32) {
	major = uint32((dev & 0xfff00) >> 8)
	minor = uint32(dev&0xff) | uint32((dev>>12)&0xfff00)
	return major, minor
}

func putString(dst []byte, s string) {
	clear(dst)
	copy(dst[:len(dst)-1], s)
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

func align8(n int) int { return (n + 7) &^ 7 }
