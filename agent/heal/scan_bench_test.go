package heal

import (
	"fmt"
	"io"
	"testing"

	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/kernel/sysfs/sysfstest"
)

// BenchmarkScanOf100LiveVolumes measures on the host's own CPU what the
// agent does every scan interval (1 s by default) when nothing happens: read
// the state of 100 managed controllers. Its time per scan, at one scan a
// second, is the agent's idle CPU share; make bench runs it next to
// the VM's measurement, whose emulated CPU only gives an upper bound. The
// fake sysfs is a directory of regular files, which read a little faster
// than sysfs attributes.
func BenchmarkScanOf100LiveVolumes(b *testing.B) {
	// Tracking 100 volumes logs 200 lines, which would split the
	// benchmark's result line (go test prints the binary's stderr inline).
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	b.Cleanup(func() { klog.LogToStderr(true) })
	// Plain reads: the harness's fault injection costs more than the reads.
	h := newHarness(b, func(c *Config) { c.Sysfs.ReadFile = nil })
	const n = 100
	for i := range n {
		ctrl := fmt.Sprintf("nvme%d", i)
		sysfstest.AddController(b, h.root, sysfstest.Controller{Name: ctrl, SubsysNQN: fmt.Sprintf("%spvc-%03d", prefix, i)})
		sysfstest.AddNamespace(b, h.root, sysfstest.Namespace{Controller: ctrl, Head: i, NSID: 1, Dev: fmt.Sprintf("259:%d", i)})
	}
	h.loop.begin()
	for i := range n {
		h.track(Volume{VolumeID: fmt.Sprintf("pvc-%03d", i), NQN: fmt.Sprintf("%spvc-%03d", prefix, i), NSID: 1})
	}
	for i := range n {
		h.wantState(fmt.Sprintf("pvc-%03d", i), StateLive)
	}
	for b.Loop() {
		h.loop.scan()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e9*100, "%cpu-at-1-scan/s")
}
