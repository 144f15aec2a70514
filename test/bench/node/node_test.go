// Package node runs the node benchmarks of `make bench`
// in the VM test bed: the guest benchmarks of test/e2e/guest (TestPerf*)
// against the real kernel NVMe/TCP initiator and nvmet target, with the
// real agent binary for the footprint. Each guest sample becomes a metric
// of the benchmark (median, and the worst); docs/benchmarks.md records
// them.
package node

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rds-csi/rds-csi/test/e2e/vm"
	"github.com/rds-csi/rds-csi/test/workload"
)

const (
	perfMarker = "RDS-CSI-PERF "
	// bootTimeout bounds one guest run: 100 volumes are created and staged
	// under TCG, and every latency is taken five times.
	bootTimeout  = 60 * time.Minute
	guestTimeout = 55 * time.Minute
)

// kernels is RDS_CSI_BENCH_KERNELS ("6.1,6.12"), or both.
func kernels() []string {
	env := strings.TrimSpace(os.Getenv("RDS_CSI_BENCH_KERNELS"))
	if env == "" {
		return []string{"6.1", "6.12"}
	}
	return strings.Split(env, ",")
}

func BenchmarkNodeInVM(b *testing.B) {
	if os.Getenv("RDS_CSI_E2E") == "skip" {
		b.Skip("SKIP: the VM test bed is switched off by RDS_CSI_E2E=skip")
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		b.Skipf("the VM test bed needs linux/amd64, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	ctx := b.Context()
	if err := vm.EnsureTools(ctx, b.Logf); err != nil {
		b.Fatalf("preparing the host: %v", err)
	}
	dir := b.TempDir()
	guest, agent := filepath.Join(dir, "guest.test"), filepath.Join(dir, "rds-csi-agent")
	if err := vm.BuildStatic(ctx, guest, "./test/e2e/guest", true); err != nil {
		b.Fatal(err)
	}
	if err := vm.BuildStatic(ctx, agent, "./cmd/rds-csi-agent", false); err != nil {
		b.Fatal(err)
	}
	var cal []float64
	for range 3 {
		cal = append(cal, ms(workload.Calibrate()))
	}
	hostCal := median(cal)
	logDir := os.Getenv("RDS_CSI_E2E_LOGDIR")
	if logDir == "" {
		logDir = dir
	}
	for _, flavor := range kernels() {
		b.Run("kernel-"+flavor, func(b *testing.B) {
			samples := runGuest(b, flavor, guest, agent, logDir)
			report(b, samples, hostCal)
		})
	}
}

// runGuest boots one kernel with the guest benchmarks and returns their
// samples by name.
func runGuest(b *testing.B, flavor, guest, agent, logDir string) map[string]series {
	ctx := b.Context()
	k, err := vm.FetchKernel(ctx, flavor, b.Logf)
	if err != nil {
		b.Fatalf("kernel %s: %v", flavor, err)
	}
	initrd := filepath.Join(b.TempDir(), "initrd.gz")
	ir := vm.Initramfs{
		Kernel: k, TestBinary: guest, Work: b.TempDir(),
		TestArgs: []string{"-test.run=^TestPerf", "-test.timeout=" + guestTimeout.String(), "-rds.perf"},
		Files:    map[string]string{"/rds-csi-agent": agent},
	}
	// A quick try of the machinery: RDS_CSI_BENCH_GUEST_ARGS="-rds.perf.rounds=1 -rds.perf.volumes=10".
	ir.TestArgs = append(ir.TestArgs, strings.Fields(os.Getenv("RDS_CSI_BENCH_GUEST_ARGS"))...)
	if err := ir.Build(ctx, initrd); err != nil {
		b.Fatalf("initramfs: %v", err)
	}
	logPath := filepath.Join(logDir, "bench-kernel-"+flavor+".serial.log")
	b.Logf("serial console of kernel %s (%s): %s", flavor, k.Package, logPath)
	boot := vm.Boot{Kernel: k, Initrd: initrd, Multipath: true, Log: logPath, Timeout: bootTimeout}
	console, err := boot.Run(ctx)
	res := vm.ParseConsole(console)
	if err != nil {
		b.Fatalf("%v; the console ends with:\n%s", err, res.Tail(60))
	}
	for _, gt := range res.Tests {
		if gt.Status != "PASS" {
			b.Errorf("guest benchmark %s: %s\n%s", gt.Name, gt.Status, strings.Join(gt.Output, "\n"))
		}
	}
	if res.ExitCode != 0 || len(res.Tests) == 0 {
		b.Fatalf("the guest benchmarks exited %d after %d tests; the console ends with:\n%s", res.ExitCode, len(res.Tests), res.Tail(60))
	}
	samples, err := parseSamples(console)
	if err != nil {
		b.Fatal(err)
	}
	if len(samples) == 0 {
		b.Fatal("the guest benchmarks printed no sample")
	}
	b.Logf("guest kernel %s", res.Kernel)
	return samples
}

// series is the samples of one measurement.
type series struct {
	unit   string
	values []float64
}

// parseSamples reads the guest's sample lines.
func parseSamples(console string) (map[string]series, error) {
	out := map[string]series{}
	sc := bufio.NewScanner(strings.NewReader(console))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		i := strings.Index(line, perfMarker)
		if i < 0 {
			continue
		}
		fields := strings.Fields(line[i+len(perfMarker):])
		if len(fields) != 3 {
			return nil, fmt.Errorf("malformed sample line %q", line)
		}
		v, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			return nil, fmt.Errorf("sample line %q: %w", line, err)
		}
		s := out[fields[0]]
		if s.unit != "" && s.unit != fields[2] {
			return nil, fmt.Errorf("sample %s in %s and in %s", fields[0], s.unit, fields[2])
		}
		s.unit = fields[2]
		s.values = append(s.values, v)
		out[fields[0]] = s
	}
	return out, sc.Err()
}

// report turns samples into metrics and logs a table for docs/benchmarks.md.
// The guest's CPU is emulated: agent CPU shares are also reported divided
// by how much slower the guest ran the calibration than the host.
func report(b *testing.B, samples map[string]series, hostCal float64) {
	names := make([]string, 0, len(samples))
	for n := range samples {
		names = append(names, n)
	}
	slices.Sort(names)
	slowdown := 0.0
	if c, ok := samples["calibrate"]; ok && hostCal > 0 {
		slowdown = median(c.values) / hostCal
		b.ReportMetric(slowdown, "x-guest-cpu-slowdown")
	}
	var table strings.Builder
	table.WriteString("| measurement | unit | median | min | max | samples |\n|---|---|---|---|---|---|\n")
	for _, n := range names {
		s := samples[n]
		unit := strings.ReplaceAll(s.unit, "%", "pct-")
		b.ReportMetric(median(s.values), n+"-median-"+unit)
		if len(s.values) > 1 {
			b.ReportMetric(slices.Max(s.values), n+"-max-"+unit)
		}
		fmt.Fprintf(&table, "| %s | %s | %.1f | %.1f | %.1f | %d |\n", n, s.unit, median(s.values), slices.Min(s.values), slices.Max(s.values), len(s.values))
		if strings.HasPrefix(n, "agent_cpu_") && slowdown > 0 {
			est := median(s.values) / slowdown
			b.ReportMetric(est, n+"-host-estimate-pct-cpu")
			fmt.Fprintf(&table, "| %s ÷ slowdown %.1f | %%cpu | %.3f | | | |\n", n, slowdown, est)
		}
	}
	fmt.Fprintf(&table, "| calibration on the host | ms | %.1f | | | |\n", hostCal)
	// Printed, not logged: the testing package keeps only ten lines of a
	// benchmark's log.
	fmt.Printf("%s samples:\n%s", b.Name(), table.String())
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
