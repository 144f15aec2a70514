package rdssim

import (
	"strings"
	"testing"
	"time"
)

func TestGroupDigitsSeparatesThousandsWithSpaces(t *testing.T) {
	for n, want := range map[int64]string{
		0:             "0",
		999:           "999",
		1000:          "1 000",
		53687091200:   "53 687 091 200",
		7681574174720: "7 681 574 174 720",
		-1234:         "-1 234",
	} {
		if got := groupDigits(n); got != want {
			t.Errorf("groupDigits(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestHumanSizeRoundsToOneDecimalInTheUnitItExceeds(t *testing.T) {
	for n, want := range map[int64]string{
		512:                     "512B",
		1024:                    "1024B",
		1536:                    "1.5KiB",
		1 << 30:                 "1024.0MiB", // a hardware sample
		1<<30 + 1:               "1.0GiB",
		3 << 29:                 "1.5GiB",
		50 << 30:                "50.0GiB",
		10<<30 - 1:              "10.0GiB", // rounding hides the missing byte
		11 << 39:                "5.5TiB",
		(1 << 40) + (1 << 38):   "1.2TiB", // 1.25 rounds to even
		(1 << 40) + (3 << 37):   "1.4TiB",
		1<<50 + 1<<49 + 1<<48:   "1.8PiB",
		int64(100) << 30 * 1024: "100.0TiB",
	} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestFormatRateUsesDecimalBitsPerSecond(t *testing.T) {
	for n, want := range map[int64]string{
		0:             "0bps",
		999:           "999bps",
		12_800_000:    "12.8Mbps",
		1_500_000_000: "1.5Gbps",
	} {
		if got := formatRate(n); got != want {
			t.Errorf("formatRate(%d) = %q, want %q", n, got, want)
		}
	}
}

func testDisk(path string, size int64) *diskState {
	return &diskState{
		Slot: "pvc-test-123", FilePath: path, FileSize: size, MountFilesystem: true,
		Export: true, Port: 4420, NQN: "nqn.2000-02.com.mikrotik:pvc-test-123",
	}
}

func TestRenderRecords(t *testing.T) {
	longPath := "/storage-pool/metal-csi/pvc-ccdecfad-a8bf-572e-9120-464c4d99f12f.img"
	fields := func(names ...string) record {
		var r record
		for _, n := range names {
			r = append(r, plain(n[:1], n[1:]))
		}
		return r
	}
	cases := []struct {
		name   string
		recs   []record
		layout layout
		width  int
		want   string
	}{{
		name:   "the hardware sample disk at width 80, fields packed in the reported order",
		recs:   []record{fileDiskRecord(testDisk("/storage-pool/test.img", 50<<30))},
		layout: diskLayout,
		width:  80,
		want: diskLayout.header + "\n" +
			` 0  type=file slot="pvc-test-123" slot-default="" parent="" fs=-
               model="/storage-pool/test.img" size=53 687 091 200
               mount-filesystem=yes mount-read-only=no compress=no
               sector-size=512 raid-master=none nvme-tcp-export=yes
               nvme-tcp-server-port=4420
               nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-test-123"
               nvme-tcp-server-allow-host-name="" iscsi-export=no
               nfs-sharing=no smb-sharing=no media-sharing=no
               media-interface=none swap=no file-path=/storage-pool/test.img
               file-size=50.0GiB file-offset=0

`,
	}, {
		name:   "a long path at width 80 is cut mid-value at exactly the width",
		recs:   []record{{plain("swap", "no"), plain("file-path", longPath), human("file-size", 1<<30)}},
		layout: diskLayout,
		width:  80,
		want: diskLayout.header + "\n" +
			` 0  swap=no
               file-path=/storage-pool/metal-csi/pvc-ccdecfad-a8bf-572e-9120-464
               c4d99f12f.img file-size=1024.0MiB

`,
	}, {
		name:   "a wide console keeps a record on one line",
		recs:   []record{{plain("swap", "no"), plain("file-path", longPath), human("file-size", 1<<30)}},
		layout: diskLayout,
		width:  4096,
		want:   diskLayout.header + "\n" + " 0  swap=no file-path=" + longPath + " file-size=1024.0MiB\n\n",
	}, {
		name: "file records match the hardware sample: unquoted values with spaces",
		recs: []record{
			fileRecord(fileEntry{name: "storage-pool/metal-csi", kind: "directory", modified: time.Date(2025, 11, 11, 16, 47, 7, 0, time.UTC)}),
			fileRecord(fileEntry{name: "storage-pool/metal-csi/pvc-ccdecfad-a8bf-572e-9120-464c4d99f12f.img", kind: "file", ext: ".img", size: 10 << 30, modified: time.Date(2025, 11, 11, 14, 32, 41, 0, time.UTC)}),
		},
		layout: fileLayout,
		width:  80,
		// Matches the hardware sample in routeros.md byte for byte.
		want: ` 0   name=storage-pool/metal-csi type=directory
     last-modified=2025-11-11 16:47:07

 1   name=storage-pool/metal-csi/pvc-ccdecfad-a8bf-572e-9120-464c4d99f12f.img
     type=.img file size=10.0GiB last-modified=2025-11-11 14:32:41

`,
	}, {
		name:   "a field that would end the line at exactly the width starts a new line",
		recs:   []record{fields("a"+strings.Repeat("x", 34), "b"+strings.Repeat("y", 37))},
		layout: layout{gap: "  ", indent: 15},
		width:  80,
		want: " 0  a=" + strings.Repeat("x", 34) + "\n" +
			"               b=" + strings.Repeat("y", 37) + "\n\n",
	}, {
		name:   "a field longer than two lines is cut twice, each line exactly the width",
		recs:   []record{fields("a" + strings.Repeat("x", 60))},
		layout: layout{gap: "  ", indent: 15},
		width:  40,
		want: " 0  a=" + strings.Repeat("x", 34) + "\n" +
			"               " + strings.Repeat("x", 25) + "\n" +
			"               " + strings.Repeat("x", 1) + "\n\n",
	}, {
		name:   "a width below the minimum is raised to it",
		recs:   []record{fields("a"+strings.Repeat("x", 40), "b1")},
		layout: layout{gap: "  ", indent: 15},
		width:  10,
		want: " 0  a=" + strings.Repeat("x", 34) + "\n" +
			"               " + strings.Repeat("x", 6) + " b=1\n\n",
	}, {
		name:   "the header is printed even when nothing matched",
		recs:   nil,
		layout: diskLayout,
		width:  80,
		want:   diskLayout.header + "\n",
	}, {
		name:   "indexes are right-aligned to the widest one",
		recs:   make11(),
		layout: fileLayout,
		width:  80,
		want:   " 0   n=0\n\n 1   n=1\n\n 2   n=2\n\n 3   n=3\n\n 4   n=4\n\n 5   n=5\n\n 6   n=6\n\n 7   n=7\n\n 8   n=8\n\n 9   n=9\n\n10   n=10\n\n",
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(renderRecords(tc.recs, tc.layout, tc.width), "\n") + "\n"
			if got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
			for _, line := range strings.Split(got, "\n") {
				if len(line) > max(tc.width, MinWidth) {
					t.Errorf("line longer than the width: %q", line)
				}
			}
		})
	}
}

func make11() []record {
	var recs []record
	for i := range 11 {
		recs = append(recs, record{grouped("n", int64(i))})
	}
	return recs
}

func TestPoolRecordShowsCapacityGroupedAndUseInPercent(t *testing.T) {
	got := strings.Join(renderRecords([]record{poolRecord("storage-pool", 7681574174720, 5632440000000)}, diskLayout, 4096), "\n")
	for _, want := range []string{
		` slot="storage-pool" `,
		` size=7 681 574 174 720 free=5 632 440 000 000 use=27% `,
		` mount-point="storage-pool" `,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("pool record %q lacks %q", got, want)
		}
	}
}

func TestRenderMonitorRightAlignsKeys(t *testing.T) {
	got := renderMonitor([][2]string{{"name", "rds-sim"}, {"read-rate", "0bps"}})
	want := []string{"       name: rds-sim", "  read-rate: 0bps"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}
}
