package dm

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// golang.org/x/sys generates its DM_* constants and the DmIoctl and
// DmTargetSpec types from the kernel's dm-ioctl.h: an independent source to
// hold the hand-written layout against.
func TestRequestNumbersAndFlagsMatchTheKernelHeader(t *testing.T) {
	for _, c := range []struct {
		name string
		got  uint32
		want uint32
	}{
		{"DM_VERSION", request(cmdVersion), unix.DM_VERSION},
		{"DM_REMOVE_ALL", request(cmdRemoveAll), unix.DM_REMOVE_ALL},
		{"DM_LIST_DEVICES", request(cmdListDevices), unix.DM_LIST_DEVICES},
		{"DM_DEV_CREATE", request(cmdDevCreate), unix.DM_DEV_CREATE},
		{"DM_DEV_REMOVE", request(cmdDevRemove), unix.DM_DEV_REMOVE},
		{"DM_DEV_RENAME", request(cmdDevRename), unix.DM_DEV_RENAME},
		{"DM_DEV_SUSPEND", request(cmdDevSuspend), unix.DM_DEV_SUSPEND},
		{"DM_DEV_STATUS", request(cmdDevStatus), unix.DM_DEV_STATUS},
		{"DM_DEV_WAIT", request(cmdDevWait), unix.DM_DEV_WAIT},
		{"DM_TABLE_LOAD", request(cmdTableLoad), unix.DM_TABLE_LOAD},
		{"DM_TABLE_CLEAR", request(cmdTableClear), unix.DM_TABLE_CLEAR},
		{"DM_TABLE_DEPS", request(cmdTableDeps), unix.DM_TABLE_DEPS},
		{"DM_TABLE_STATUS", request(cmdTableStatus), unix.DM_TABLE_STATUS},
		{"DM_LIST_VERSIONS", request(cmdListVersion), unix.DM_LIST_VERSIONS},
		{"DM_TARGET_MSG", request(cmdTargetMsg), unix.DM_TARGET_MSG},
		{"DM_SUSPEND_FLAG", flagSuspend, unix.DM_SUSPEND_FLAG},
		{"DM_STATUS_TABLE_FLAG", flagStatusTable, unix.DM_STATUS_TABLE_FLAG},
		{"DM_ACTIVE_PRESENT_FLAG", flagActivePresent, unix.DM_ACTIVE_PRESENT_FLAG},
		{"DM_BUFFER_FULL_FLAG", flagBufferFull, unix.DM_BUFFER_FULL_FLAG},
		{"DM_NOFLUSH_FLAG", flagNoFlush, unix.DM_NOFLUSH_FLAG},
		{"DM_NAME_LEN", nameLen, unix.DM_NAME_LEN},
		{"DM_UUID_LEN", uuidLen, unix.DM_UUID_LEN},
		{"DM_MAX_TYPE_NAME", typeLen, unix.DM_MAX_TYPE_NAME},
		{"DM_IOCTL", ioctlType, unix.DM_IOCTL},
		{"version major", interfaceVersion[0], unix.DM_VERSION_MAJOR},
	} {
		if c.got != c.want {
			t.Errorf("%s: %#x, kernel header says %#x", c.name, c.got, c.want)
		}
	}
	if request(cmdVersion) != 0xc138fd00 {
		t.Errorf("DM_VERSION is %#x, want 0xc138fd00", request(cmdVersion))
	}
}

func TestStructLayoutMatchesTheKernelHeader(t *testing.T) {
	var h unix.DmIoctl
	var s unix.DmTargetSpec
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(dm_ioctl)", headerSize, unix.SizeofDmIoctl},
		{"sizeof(dm_target_spec)", specSize, unix.SizeofDmTargetSpec},
		{"data_size", offDataSize, unsafe.Offsetof(h.Data_size)},
		{"data_start", offDataStart, unsafe.Offsetof(h.Data_start)},
		{"target_count", offTargetCount, unsafe.Offsetof(h.Target_count)},
		{"open_count", offOpenCount, unsafe.Offsetof(h.Open_count)},
		{"flags", offFlags, unsafe.Offsetof(h.Flags)},
		{"event_nr", offEventNr, unsafe.Offsetof(h.Event_nr)},
		{"dev", offDev, unsafe.Offsetof(h.Dev)},
		{"name", offName, unsafe.Offsetof(h.Name)},
		{"uuid", offUUID, unsafe.Offsetof(h.Uuid)},
		{"sector_start", offSpecStart, unsafe.Offsetof(s.Sector_start)},
		{"length", offSpecLength, unsafe.Offsetof(s.Length)},
		{"status", offSpecStatus, unsafe.Offsetof(s.Status)},
		{"next", offSpecNext, unsafe.Offsetof(s.Next)},
		{"target_type", offSpecType, unsafe.Offsetof(s.Target_type)},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, kernel header says %d", c.name, c.got, c.want)
		}
	}
}

func TestHeaderRoundTripsAndSitsWhereTheKernelReadsIt(t *testing.T) {
	buf := newBuffer("vol-1_a", flagSuspend|flagNoFlush, 2, []byte("payload"), 0)
	if len(buf) != 320 {
		t.Fatalf("buffer of %d bytes, want 312 + 7 rounded up to 320", len(buf))
	}
	h, err := parseHeader(buf)
	if err != nil {
		t.Fatal(err)
	}
	want := header{version: interfaceVersion, dataSize: 320, dataStart: 312, targetCount: 2, flags: flagSuspend | flagNoFlush, name: "vol-1_a"}
	if h != want {
		t.Errorf("parsed %+v, want %+v", h, want)
	}
	// The same bytes through x/sys's struct, which mirrors the C layout.
	k := (*unix.DmIoctl)(unsafe.Pointer(&buf[0]))
	if k.Version != [3]uint32{4, 0, 0} || k.Data_size != 320 || k.Data_start != 312 || k.Target_count != 2 || k.Flags != flagSuspend|flagNoFlush {
		t.Errorf("the kernel would read %+v", *k)
	}
	if got := unix.ByteSliceToString(k.Name[:]); got != "vol-1_a" {
		t.Errorf("the kernel would read name %q", got)
	}
	if string(buf[312:319]) != "payload" || buf[319] != 0 {
		t.Errorf("payload bytes %q", buf[312:])
	}

	h.dev, h.openCount, h.eventNr = encodeDev(253, 4), -1, 9
	h.put(buf)
	if back, _ := parseHeader(buf); back != h {
		t.Errorf("round trip: %+v, want %+v", back, h)
	}
	if _, err := parseHeader(buf[:311]); !errors.Is(err, errShort) {
		t.Errorf("a short header parsed: %v", err)
	}
}

func TestBufferHasRoomForTheAnswer(t *testing.T) {
	buf := newBuffer("v", 0, 0, nil, 16<<10)
	h, _ := parseHeader(buf)
	if len(buf) != 16<<10 || h.dataSize != 16<<10 {
		t.Errorf("len %d, data_size %d; want 16384 both", len(buf), h.dataSize)
	}
}

func TestTableEncodingIsWhatTableLoadReads(t *testing.T) {
	table := []Target{
		{Start: 0, Length: 2048, Type: "linear", Params: "7:0 0"},                       // 40+6 → 48
		{Start: 2048, Length: 100, Type: "zero"},                                        // 40+1 → 48
		{Start: 2148, Length: 4096, Type: "multipath", Params: strings.Repeat("x", 15)}, // 40+16 → 56
	}
	b := encodeTable(table)
	if len(b) != 48+48+56 {
		t.Fatalf("%d bytes, want 152", len(b))
	}
	ne := binary.NativeEndian
	off := 0
	for i, want := range table {
		spec := (*unix.DmTargetSpec)(unsafe.Pointer(&b[off]))
		if spec.Sector_start != want.Start || spec.Length != want.Length || unix.ByteSliceToString(spec.Target_type[:]) != want.Type {
			t.Errorf("target %d reads as %+v", i, *spec)
		}
		params := b[off+specSize:]
		end := strings.IndexByte(string(params), 0)
		if end < 0 || string(params[:end]) != want.Params {
			t.Errorf("target %d params %q, want %q NUL-terminated", i, params, want.Params)
		}
		next := int(ne.Uint32(b[off+offSpecNext:]))
		if next%8 != 0 || next < specSize+len(want.Params)+1 {
			t.Errorf("target %d next %d: not aligned or overlapping its params", i, next)
		}
		off += next // in a load, next counts from the current spec
	}
	if off != len(b) {
		t.Errorf("specs end at %d of %d", off, len(b))
	}
}

// statusAnswer lays out a DM_TABLE_STATUS answer as the kernel does: next
// counts from the start of the data.
func statusAnswer(targets []Target) []byte {
	var b []byte
	for _, t := range targets {
		entry := make([]byte, align8(specSize+len(t.Params)+1))
		binary.NativeEndian.PutUint64(entry[offSpecStart:], t.Start)
		binary.NativeEndian.PutUint64(entry[offSpecLength:], t.Length)
		putString(entry[offSpecType:offSpecType+typeLen], t.Type)
		copy(entry[specSize:], t.Params)
		binary.NativeEndian.PutUint32(entry[offSpecNext:], uint32(len(b)+len(entry)))
		b = append(b, entry...)
	}
	return b
}

func TestDecodeTargets(t *testing.T) {
	targets := []Target{
		{Start: 0, Length: 2048, Type: "multipath", Params: "2 0 0 0 1 1 A 0 1 2 259:1 A 0 0 1"},
		{Start: 2048, Length: 8, Type: "zero"},
	}
	withSpace := append([]Target(nil), targets...)
	withSpace[0].Params += " " // as multipath prints it
	good := statusAnswer(withSpace)
	got, err := decodeTargets(good, 2)
	if err != nil || len(got) != 2 || got[0] != targets[0] || got[1] != targets[1] {
		t.Fatalf("decoded %+v, %v; want %+v", got, err, targets)
	}
	if got[0].String() != "0 2048 multipath 2 0 0 0 1 1 A 0 1 2 259:1 A 0 0 1" || got[1].String() != "2048 8 zero" {
		t.Errorf("lines %q %q", got[0], got[1])
	}

	unterminated := statusAnswer(targets[:1])
	for i := specSize; i < len(unterminated); i++ {
		unterminated[i] = 'x'
	}
	backwards := statusAnswer(targets)
	binary.NativeEndian.PutUint32(backwards[offSpecNext:], 0)
	for name, c := range map[string]struct {
		data  []byte
		count uint32
	}{
		"more targets than data":       {good, 3},
		"truncated spec":               {good[:20], 1},
		"parameters not terminated":    {unterminated, 1},
		"next pointing back at itself": {backwards, 2},
	} {
		if got, err := decodeTargets(c.data, c.count); err == nil {
			t.Errorf("%s: decoded %+v", name, got)
		}
	}
}

func TestMessageLayout(t *testing.T) {
	b := encodeMessage(0, "fail_if_no_path")
	if len(b) != 24 || binary.NativeEndian.Uint64(b) != 0 || string(b[8:23]) != "fail_if_no_path" || b[23] != 0 {
		t.Errorf("message bytes %q", b)
	}
}

func TestDeviceNumbersUseTheKernelsEncoding(t *testing.T) {
	for _, c := range []struct{ major, minor uint32 }{{253, 0}, {259, 1}, {7, 300}, {4095, 1<<20 - 1}, {8, 256}} {
		dev := encodeDev(c.major, c.minor)
		if maj, mnr := decodeDev(dev); maj != c.major || mnr != c.minor {
			t.Errorf("%d:%d decodes as %d:%d", c.major, c.minor, maj, mnr)
		}
		// Within 12-bit majors and 20-bit minors glibc's encoding (which
		// stat's st_rdev uses) is the kernel's.
		if dev != unix.Mkdev(c.major, c.minor) {
			t.Errorf("%d:%d encodes as %#x, Mkdev %#x", c.major, c.minor, dev, unix.Mkdev(c.major, c.minor))
		}
	}
	// 253:4 as the kernel's huge_encode_dev writes it.
	if maj, mnr := decodeDev(0xfd04); maj != 253 || mnr != 4 {
		t.Errorf("0xfd04 decodes as %d:%d", maj, mnr)
	}
}
