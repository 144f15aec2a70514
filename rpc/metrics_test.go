package rpc

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

type identity struct {
	csi.UnimplementedIdentityServer
}

func (identity) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: "rds.csi.dev", VendorVersion: "test"}, nil
}

func TestEveryCallIsTimedByMethodAndCode(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := NewServer("rds.csi.dev", NewMetrics(reg))
	csi.RegisterIdentityServer(srv, identity{})
	endpoint := "unix://" + filepath.Join(t.TempDir(), "csi.sock")
	lis, err := Listen(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	c := csi.NewIdentityClient(conn)
	if _, err := c.GetPluginInfo(context.Background(), &csi.GetPluginInfoRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Probe(context.Background(), &csi.ProbeRequest{}); err == nil {
		t.Fatal("unimplemented Probe succeeded")
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]uint64{}
	for _, f := range families {
		if f.GetName() != "csi_plugin_operations_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			seen[labels["driver_name"]+" "+labels["method_name"]+" "+labels["grpc_status_code"]] = m.GetHistogram().GetSampleCount()
		}
	}
	want := map[string]uint64{
		"rds.csi.dev /csi.v1.Identity/GetPluginInfo OK":    1,
		"rds.csi.dev /csi.v1.Identity/Probe Unimplemented": 1,
	}
	if len(seen) != len(want) {
		t.Fatalf("series %v, want %v", seen, want)
	}
	for k, v := range want {
		if seen[k] != v {
			t.Fatalf("series %v, want %v", seen, want)
		}
	}
}
