// Package controller is the CSI Identity and Controller service of rds-csi:
// it provisions volumes as file-backed, NVMe/TCP-exported disks on a
// MikroTik RDS through the RouterOS CLI.
package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"

	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/volume"
)

// DefaultDriverName is the CSI driver name. Volumes of the earlier driver for
// this appliance are adopted by running with its name, rds.csi.srvlab.io.
const DefaultDriverName = "rds.csi.dev"

// Options configure the controller. Every field has a flag in
// cmd/rds-csi-controller.
type Options struct {
	DriverName string
	Version    string
	// NQNPrefix + slot is every volume's subsystem NQN.
	NQNPrefix string
	// BasePath is the default directory of backing files on the RDS
	// ("/storage-pool/rds-csi"); its first part names the pool.
	BasePath string
	// NVMeAddress and NVMePort are the default NVMe/TCP target.
	NVMeAddress string
	NVMePort    int
	// CapacityReserve is kept free: GetCapacity reports free space minus it.
	CapacityReserve int64
	// RWOGracePeriod is how long a ReadWriteOnce holder whose
	// VolumeAttachment is being deleted or is gone is waited for before it
	// blocks (being deleted) or is released as stale (gone): the sequential
	// hand-off of a volume from one node to the next. It never lets two
	// nodes hold a ReadWriteOnce volume at once.
	RWOGracePeriod time.Duration
	// TargetFencing restricts each disk's NVMe/TCP export to the host NQNs
	// of the nodes it is published to; opt-in until the property's
	// semantics are confirmed on hardware.
	TargetFencing bool
}

// maxRWOGracePeriod bounds the grace period: longer, and a stale record
// would block a ReadWriteOnce volume for that long.
const maxRWOGracePeriod = 10 * time.Minute

// Validate checks the options and fills defaults.
func (o *Options) Validate() error {
	if o.DriverName == "" {
		o.DriverName = DefaultDriverName
	}
	if o.NQNPrefix == "" {
		o.NQNPrefix = volume.DefaultNQNPrefix
	}
	if o.NVMePort == 0 {
		o.NVMePort = 4420
	}
	var errs []error
	if err := routeros.ValidateNQN(o.NQNPrefix + "x"); err != nil {
		errs = append(errs, fmt.Errorf("NQN prefix %q does not form valid NQNs", o.NQNPrefix))
	}
	if err := routeros.ValidateFilePath(o.BasePath); err != nil {
		errs = append(errs, fmt.Errorf("base path: %w", err))
	}
	if o.NVMeAddress != "" && net.ParseIP(o.NVMeAddress) == nil {
		errs = append(errs, fmt.Errorf("NVMe address %q is not an IP address", o.NVMeAddress))
	}
	if err := routeros.ValidatePort(o.NVMePort); err != nil {
		errs = append(errs, err)
	}
	if o.CapacityReserve < 0 {
		errs = append(errs, errors.New("capacity reserve must not be negative"))
	}
	if o.RWOGracePeriod < 0 || o.RWOGracePeriod > maxRWOGracePeriod {
		errs = append(errs, fmt.Errorf("RWO grace period %s: want 0 to %s", o.RWOGracePeriod, maxRWOGracePeriod))
	}
	return errors.Join(errs...)
}

// RDS is what the controller needs from the appliance; *routeros.Disks is it.
type RDS interface {
	Get(ctx context.Context, slot string) (routeros.Disk, error)
	List(ctx context.Context) ([]routeros.Disk, error)
	Create(ctx context.Context, spec routeros.DiskSpec) error
	Copy(ctx context.Context, spec routeros.CopySpec) error
	FilesWith(ctx context.Context, slot string) ([]routeros.File, error)
	Resize(ctx context.Context, slot string, size int64) error
	Remove(ctx context.Context, slot string) error
	FilesNamed(ctx context.Context, slot, name string) ([]routeros.File, error)
	RemoveFile(ctx context.Context, path string) error
	Pool(ctx context.Context, mountPoint string) (routeros.Pool, error)
	Ping(ctx context.Context) error
	SetAllowedHosts(ctx context.Context, slot string, hosts []string) error
}

// Driver serves the CSI Identity and Controller services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer

	opts     Options
	rds      RDS
	inFlight volume.InFlight

	// view and reporter are nil without a cluster: then the attachment
	// state lives in memory only (tests, csi-sanity).
	view       ClusterView
	reporter   Reporter
	clock      clock.WithTicker
	metricsReg prometheus.Registerer
	attached   attachments
	migration  *migrationMetrics
}

// New returns a driver; opts must have passed Validate. With WithCluster,
// the attachment state is rebuilt from the cluster's VolumeAttachments.
func New(opts Options, rds RDS, options ...Option) *Driver {
	d := &Driver{opts: opts, rds: rds, clock: clock.RealClock{}}
	for _, o := range options {
		o(d)
	}
	d.migration = newMigrationMetrics(&d.attached)
	if d.metricsReg != nil {
		d.migration.register(d.metricsReg)
	}
	if d.view != nil {
		d.rebuild()
	}
	return d
}

// poolOf names the pool that holds base: its first path component, which
// RouterOS prints as the pool disk's mount-point.
func poolOf(base string) string {
	return strings.SplitN(strings.TrimPrefix(path.Clean(base), "/"), "/", 2)[0]
}

// ours reports whether disk follows this driver's naming convention, the only
// disks it lists or deletes.
func (d *Driver) ours(disk routeros.Disk) bool {
	return disk.Type == "file" && disk.NQN == volume.NQN(d.opts.NQNPrefix, disk.Slot)
}

// acquire takes volume id's in-flight key, or answers Aborted: the CSI
// sidecars retry, and a second operation must not race the first.
func (d *Driver) acquire(id string) (release func(), err error) {
	release, ok := d.inFlight.TryAcquire(id)
	if !ok {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %q is in progress", id)
	}
	return release, nil
}
