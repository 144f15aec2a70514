package node

import (
	"reflect"
	"testing"
)

func TestParseSamplesGroupsTheGuestLinesByName(t *testing.T) {
	console := "[  1.0] boot noise\r\n" +
		"RDS-CSI-PERF detect_uevent 12.500 ms\r\n" +
		"=== RUN   TestPerfDetection\n" +
		"\x1b[0mRDS-CSI-PERF detect_uevent 9.000 ms\n" +
		"RDS-CSI-PERF agent_rss_0_volumes 14.250 MiB\n"
	got, err := parseSamples(console)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]series{
		"detect_uevent":       {unit: "ms", values: []float64{12.5, 9}},
		"agent_rss_0_volumes": {unit: "MiB", values: []float64{14.25}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parseSamples = %+v, want %+v", got, want)
	}
}

func TestParseSamplesRejectsWhatItCannotRead(t *testing.T) {
	for name, console := range map[string]string{
		"a missing unit":       "RDS-CSI-PERF detect_uevent 12.5\n",
		"a value that is text": "RDS-CSI-PERF detect_uevent fast ms\n",
		"two units for a name": "RDS-CSI-PERF x 1 ms\nRDS-CSI-PERF x 1 s\n",
	} {
		if _, err := parseSamples(console); err == nil {
			t.Errorf("%s: parsed without an error", name)
		}
	}
}

func TestMedianOfOddAndEvenCounts(t *testing.T) {
	if m := median([]float64{5, 1, 3}); m != 3 {
		t.Errorf("median(5,1,3) = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median(4,1,3,2) = %v", m)
	}
}
