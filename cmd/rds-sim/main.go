// Command rds-sim runs the RDS simulator (package test/rdssim) as an SSH
// server, for manual runs, demos and the VM end-to-end tests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/test/rdssim"
	"github.com/rds-csi/rds-csi/test/rdssim/nvmet"
)

type options struct {
	listen          string
	stateDir        string
	user            string
	authorizedKeys  string
	hostKey         string
	identity        string
	poolMountPoint  string
	poolSize        int64
	maxSessions     int
	latency         time.Duration
	copyDelay       time.Duration
	commandLog      string
	errorsOnStderr  bool
	errorExitStatus bool
	omitExitStatus  bool
	nvmet           bool
	nvmetAddr       string
}

func main() {
	klog.InitFlags(nil)
	var o options
	flag.StringVar(&o.listen, "listen", "127.0.0.1:2222", "address to listen on")
	flag.StringVar(&o.stateDir, "state-dir", "", "directory for state, host key and backing files (required)")
	flag.StringVar(&o.user, "user", rdssim.DefaultUser, "login name accepted (before any +options)")
	flag.StringVar(&o.authorizedKeys, "authorized-keys", "", "OpenSSH authorized_keys file of the keys allowed to log in (required)")
	flag.StringVar(&o.hostKey, "host-key", "", "private host key file; default: generated once in --state-dir")
	flag.StringVar(&o.identity, "identity", rdssim.DefaultIdentity, "name shown by /system identity print")
	flag.StringVar(&o.poolMountPoint, "pool-mount-point", rdssim.DefaultMountPoint, "mount point of the storage pool")
	flag.Int64Var(&o.poolSize, "pool-size", rdssim.DefaultPoolSize, "pool capacity in bytes")
	flag.IntVar(&o.maxSessions, "max-sessions", rdssim.DefaultMaxSessions, "concurrent sessions per connection")
	flag.DurationVar(&o.latency, "latency", 0, "delay before every command")
	flag.DurationVar(&o.copyDelay, "copy-delay", 0, "copy-from runs in the background for about this long (0: synchronous)")
	flag.StringVar(&o.commandLog, "command-log", "", "file to append every received command to, one a line")
	flag.BoolVar(&o.errorsOnStderr, "errors-on-stderr", false, "print errors on stderr instead of stdout")
	flag.BoolVar(&o.errorExitStatus, "error-exit-status", false, "exit 1 on errors instead of 0")
	flag.BoolVar(&o.omitExitStatus, "omit-exit-status", false, "send no exit status at all")
	flag.BoolVar(&o.nvmet, "nvmet", false, "export disks through the kernel nvmet target (needs root, configfs, nvmet and nvmet-tcp)")
	flag.StringVar(&o.nvmetAddr, "nvmet-addr", "127.0.0.1", "IPv4 address the nvmet TCP ports listen on")
	flag.Parse()

	if err := run(o); err != nil {
		klog.ErrorS(err, "rds-sim failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(o options) error {
	if o.stateDir == "" || o.authorizedKeys == "" {
		return errors.New("--state-dir and --authorized-keys are required")
	}
	keys, err := readAuthorizedKeys(o.authorizedKeys)
	if err != nil {
		return err
	}
	cfg := rdssim.Config{
		Addr:            o.listen,
		StateDir:        o.stateDir,
		User:            o.user,
		AuthorizedKeys:  keys,
		Identity:        o.identity,
		PoolMountPoint:  o.poolMountPoint,
		PoolSize:        o.poolSize,
		MaxSessions:     o.maxSessions,
		ErrorsOnStderr:  o.errorsOnStderr,
		ErrorExitStatus: o.errorExitStatus,
		OmitExitStatus:  o.omitExitStatus,
		Latency:         o.latency,
		CopyDelay:       o.copyDelay,
	}
	if o.hostKey != "" {
		data, err := os.ReadFile(o.hostKey)
		if err != nil {
			return err
		}
		if cfg.HostKey, err = ssh.ParsePrivateKey(data); err != nil {
			return fmt.Errorf("%s: %w", o.hostKey, err)
		}
	}
	if o.commandLog != "" {
		f, err := os.OpenFile(o.commandLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		cfg.CommandLog = f
	}

	if o.nvmet {
		exp, err := nvmet.New(nvmet.Config{Addr: o.nvmetAddr})
		if err != nil {
			return fmt.Errorf("--nvmet: %w", err)
		}
		// Leaving the target up after the simulator stops would serve
		// disks nobody manages.
		defer func() {
			if err := exp.Close(); err != nil {
				klog.ErrorS(err, "Removing the nvmet exports")
			}
		}()
		cfg.Exporter = exp
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sim, err := rdssim.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { _ = sim.Close() }()
	fmt.Printf("rds-sim listening on %s\nhost key %s\n", sim.Addr(), ssh.FingerprintSHA256(sim.HostKey()))
	klog.InfoS("Serving", "addr", sim.Addr(), "hostKey", ssh.FingerprintSHA256(sim.HostKey()), "stateDir", o.stateDir)
	<-ctx.Done()
	klog.InfoS("Stopping")
	return nil
}

func readAuthorizedKeys(path string) ([]ssh.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []ssh.PublicKey
	for len(data) > 0 {
		key, _, _, rest, err := ssh.ParseAuthorizedKey(data)
		if err != nil {
			// ParseAuthorizedKey skips blank and comment lines and only
			// fails when no key is left.
			if len(keys) == 0 {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			break
		}
		keys = append(keys, key)
		data = rest
	}
	return keys, nil
}
