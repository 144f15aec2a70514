// Package bench measures the controller against the simulator.
// Run with `make bench`; results go to docs/benchmarks.md.
package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/controller"
	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/rpc"
	"github.com/rds-csi/rds-csi/test/harness"
	"github.com/rds-csi/rds-csi/test/rdssim"
)

// BenchmarkCreateVolume100Concurrent creates 100 volumes at once through the
// controller's gRPC socket while every RouterOS command takes 50 ms, and
// reports the wall time of the batch and the RouterOS round trips per
// CreateVolume. Any failed CreateVolume fails the benchmark.
func BenchmarkCreateVolume100Concurrent(b *testing.B) {
	const volumes = 100
	const latency = 50 * time.Millisecond
	for i := 0; b.Loop(); i++ {
		rds := harness.StartRDS(b, rdssim.Config{Latency: latency}, routeros.ClientConfig{})
		opts := controller.Options{Version: "bench", BasePath: "/storage-pool/bench", NVMeAddress: "127.0.0.1"}
		if err := opts.Validate(); err != nil {
			b.Fatal(err)
		}
		client := serve(b, controller.New(opts, rds.Disks))
		// Connect before timing: the first command pays for the SSH handshake.
		if err := rds.Disks.Ping(context.Background()); err != nil {
			b.Fatal(err)
		}
		before := len(rds.Sim.Commands())

		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, volumes)
		for v := range volumes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := client.CreateVolume(context.Background(), &csi.CreateVolumeRequest{
					Name:          fmt.Sprintf("pvc-bench-%d-%03d", i, v),
					CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30},
					VolumeCapabilities: []*csi.VolumeCapability{{
						AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
						AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
					}},
				})
				if err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		close(errs)
		for err := range errs {
			b.Fatalf("CreateVolume failed: %v", err)
		}
		trips := len(rds.Sim.Commands()) - before
		b.ReportMetric(float64(trips)/volumes, "roundtrips/create")
		b.ReportMetric(elapsed.Seconds(), "s/100creates")
	}
}

func serve(b *testing.B, d *controller.Driver) csi.ControllerClient {
	b.Helper()
	endpoint := "unix://" + filepath.Join(b.TempDir(), "csi.sock")
	srv := rpc.NewServer("bench", nil)
	csi.RegisterControllerServer(srv, d)
	lis, err := rpc.Listen(endpoint)
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	return csi.NewControllerClient(conn)
}

// TestMain silences klog so the benchmark lines stay readable.
func TestMain(m *testing.M) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	klog.SetOutput(io.Discard)
	os.Exit(m.Run())
}
