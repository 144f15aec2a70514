// Command demo is `make demo`: it starts the RouterOS simulator and the
// controller as real processes on local sockets, walks a volume through its
// controller-side life with a CSI client, and prints every step and every
// RouterOS command the simulator received.
package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding rds-sim and rds-csi-controller")
	flag.Parse()
	if err := run(*bin); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func run(bin string) error {
	dir, err := os.MkdirTemp("", "rds-csi-demo-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()

	step("Generating the controller's SSH key and the simulated RDS's host key")
	clientKey, err := writeKey(filepath.Join(dir, "id_ed25519"))
	if err != nil {
		return err
	}
	hostKey, err := writeKey(filepath.Join(dir, "ssh_host_ed25519_key"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(clientKey.PublicKey()), 0o600); err != nil {
		return err
	}
	fingerprint := ssh.FingerprintSHA256(hostKey.PublicKey())
	fmt.Println("  pinned host key:", fingerprint)

	sshAddr, err := freeAddr()
	if err != nil {
		return err
	}
	commandLog := filepath.Join(dir, "commands.log")
	step("Starting the RDS simulator (rds-sim) on " + sshAddr)
	sim, err := start(filepath.Join(bin, "rds-sim"), filepath.Join(dir, "sim.log"),
		"--listen", sshAddr, "--state-dir", filepath.Join(dir, "rds"), "--user", "csi",
		"--authorized-keys", filepath.Join(dir, "authorized_keys"), "--host-key", filepath.Join(dir, "ssh_host_ed25519_key"),
		"--pool-size", fmt.Sprint(int64(100)<<30), "--command-log", commandLog)
	if err != nil {
		return err
	}
	defer stop(sim)
	if err := waitFor(func() error {
		c, err := net.Dial("tcp", sshAddr)
		if err == nil {
			_ = c.Close()
		}
		return err
	}); err != nil {
		return fmt.Errorf("simulator did not start (see its log): %w", err)
	}

	socket := filepath.Join(dir, "csi.sock")
	step("Starting the controller (rds-csi-controller) on unix://" + socket)
	ctrl, err := start(filepath.Join(bin, "rds-csi-controller"), filepath.Join(dir, "controller.log"),
		"--endpoint", "unix://"+socket, "--rds-address", sshAddr, "--rds-user", "csi",
		"--rds-private-key", filepath.Join(dir, "id_ed25519"), "--rds-host-key-fingerprint", fingerprint,
		"--nvme-address", "127.0.0.1", "--base-path", "/storage-pool/rds-csi", "--metrics-address", "",
		// No cluster here: attachments in memory (nothing is published).
		"--attachment-state", "memory")
	if err != nil {
		return err
	}
	defer stop(ctrl)
	if err := waitFor(func() error { _, err := os.Stat(socket); return err }); err != nil {
		return fmt.Errorf("controller did not start: %w", err)
	}

	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	identity, controller := csi.NewIdentityClient(conn), csi.NewControllerClient(conn)
	seen := 0
	showCommands := func() {
		lines, _ := readLines(commandLog)
		for _, l := range lines[seen:] {
			fmt.Println("    RouterOS <", l)
		}
		seen = len(lines)
	}

	step("Probe and GetPluginInfo")
	probe, err := identity.Probe(ctx, &csi.ProbeRequest{})
	if err != nil {
		return err
	}
	info, err := identity.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil {
		return err
	}
	fmt.Printf("  driver %s %s, ready=%v\n", info.GetName(), info.GetVendorVersion(), probe.GetReady().GetValue())
	showCommands()

	const name = "pvc-0f3a9c52-6d1e-4b7a-9c3f-2a1b3c4d5e6f"
	step("CreateVolume " + name + " of 1.5 GiB (exact bytes, never rounded to a unit)")
	created, err := controller.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: 3 << 29},
		VolumeCapabilities: []*csi.VolumeCapability{mountCapability()},
		Parameters:         map[string]string{"ctrlLossTmo": "-1", "migrationTimeoutSeconds": "300"},
	})
	if err != nil {
		return err
	}
	id := created.GetVolume().GetVolumeId()
	fmt.Printf("  volume ID %s, %d bytes\n  volume context: %v\n", id, created.GetVolume().GetCapacityBytes(), created.GetVolume().GetVolumeContext())
	showCommands()

	step("CreateVolume again (a sidecar retry): the same volume comes back")
	again, err := controller.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: 3 << 29}, VolumeCapabilities: []*csi.VolumeCapability{mountCapability()}})
	if err != nil {
		return err
	}
	fmt.Printf("  volume ID %s, %d bytes\n", again.GetVolume().GetVolumeId(), again.GetVolume().GetCapacityBytes())
	showCommands()

	step("ControllerExpandVolume to 4 GiB")
	expanded, err := controller.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 4 << 30}, VolumeCapability: mountCapability()})
	if err != nil {
		return err
	}
	fmt.Printf("  %d bytes, node expansion required: %v\n", expanded.GetCapacityBytes(), expanded.GetNodeExpansionRequired())
	showCommands()

	step("ListVolumes")
	list, err := controller.ListVolumes(ctx, &csi.ListVolumesRequest{})
	if err != nil {
		return err
	}
	for _, e := range list.GetEntries() {
		fmt.Printf("  %s  %d bytes\n", e.GetVolume().GetVolumeId(), e.GetVolume().GetCapacityBytes())
	}
	showCommands()

	step("GetCapacity")
	capacity, err := controller.GetCapacity(ctx, &csi.GetCapacityRequest{})
	if err != nil {
		return err
	}
	fmt.Printf("  %d bytes available in the pool\n", capacity.GetAvailableCapacity())
	showCommands()

	step("DeleteVolume (the disk and its backing file)")
	if _, err := controller.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		return err
	}
	showCommands()
	list, err = controller.ListVolumes(ctx, &csi.ListVolumesRequest{})
	if err != nil {
		return err
	}
	if len(list.GetEntries()) != 0 {
		return fmt.Errorf("volumes left after delete: %v", list.GetEntries())
	}
	fmt.Println("  no volumes left")
	step("Done with the controller side.")
	return nil
}

func mountCapability() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

func step(s string) { fmt.Println("\n==>", s) }

func writeKey(path string) (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

func start(path, logFile string, args ...string) (*exec.Cmd, error) {
	log, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w (run `make build` first)", path, err)
	}
	return cmd, nil
}

func stop(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// waitFor retries check until it succeeds or 10 s pass: a process has just
// been started and has no readiness signal other than its socket.
func waitFor(check func() error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	return lines, sc.Err()
}
