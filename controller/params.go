package controller

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/volume"
)

// StorageClass parameter names. The connect options and the migration
// timeout use the volume context keys of the same name.
const (
	ParamBasePath    = "basePath"
	ParamNVMeAddress = "nvmeAddress"
	ParamNVMePort    = "nvmePort"
)

// reservedPrefix marks parameters the CSI sidecars add or interpret
// themselves (fstype, the PVC and PV names of --extra-create-metadata).
const reservedPrefix = "csi.storage.k8s.io/"

// The claim a volume is created for, which the csi-provisioner passes when
// run with --extra-create-metadata. The controller carries it to the node in
// the volume context, so that Events land on the PVC.
const (
	ParamPVCName      = reservedPrefix + "pvc/name"
	ParamPVCNamespace = reservedPrefix + "pvc/namespace"
)

// classParams is a parsed, validated StorageClass parameter set.
type classParams struct {
	basePath         string
	address          string
	port             int
	connect          volume.ConnectOptions
	migrationTimeout time.Duration
	// pvcNamespace and pvcName are empty without --extra-create-metadata.
	pvcNamespace, pvcName string
}

// parseParams validates StorageClass parameters. Unknown names are refused so
// that a typo ("ctrlLossTimeout") is not silently ignored.
func (d *Driver) parseParams(params map[string]string) (classParams, error) {
	p := classParams{
		basePath:         d.opts.BasePath,
		address:          d.opts.NVMeAddress,
		port:             d.opts.NVMePort,
		connect:          volume.DefaultConnectOptions(),
		migrationTimeout: volume.DefaultMigrationTimeout,
		pvcNamespace:     params[ParamPVCNamespace],
		pvcName:          params[ParamPVCName],
	}
	var unknown []string
	for k, v := range params {
		switch k {
		case ParamBasePath:
			if err := routeros.ValidateFilePath(v); err != nil {
				return p, fmt.Errorf("parameter %s: %w", k, err)
			}
			p.basePath = strings.TrimSuffix(v, "/")
		case ParamNVMeAddress:
			if net.ParseIP(v) == nil {
				return p, fmt.Errorf("parameter %s=%q: want an IP address (the kernel's NVMe/TCP traddr takes no host name)", k, v)
			}
			p.address = v
		case ParamNVMePort:
			port, err := volume.ParsePort(v)
			if err != nil {
				return p, fmt.Errorf("parameter %s: %w", k, err)
			}
			p.port = port
		case volume.KeyMigrationTimeout:
			t, err := volume.ParseMigrationTimeout(v)
			if err != nil {
				return p, fmt.Errorf("parameter %s: %w", k, err)
			}
			p.migrationTimeout = t
		case volume.KeyCtrlLossTmo, volume.KeyReconnectDelay, volume.KeyKeepAliveTmo, volume.KeyFastIOFailTmo:
			// handled together below
		default:
			if !strings.HasPrefix(k, reservedPrefix) {
				unknown = append(unknown, k)
			}
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return p, fmt.Errorf("unknown parameter(s) %s: see the StorageClass parameter reference in the README", strings.Join(unknown, ", "))
	}
	if err := p.connect.Set(params); err != nil {
		return p, fmt.Errorf("parameter %w", err)
	}
	if p.address == "" {
		return p, fmt.Errorf("parameter %s is required (no default NVMe address is configured)", ParamNVMeAddress)
	}
	if err := volume.ValidatePVC(p.pvcNamespace, p.pvcName); err != nil {
		return p, fmt.Errorf("parameters %s and %s: %w", ParamPVCNamespace, ParamPVCName, err)
	}
	return p, nil
}

// volumeContext is what the node needs of a volume exported as nqn. Only a
// volume created empty is blank: a restored or cloned one holds data.
func (p classParams) volumeContext(nqn string, blank bool) volume.Context {
	return volume.Context{
		NQN:              nqn,
		Address:          p.address,
		Port:             p.port,
		Connect:          p.connect,
		MigrationTimeout: p.migrationTimeout,
		CreatedBlank:     blank,
		PVCNamespace:     p.pvcNamespace,
		PVCName:          p.pvcName,
	}
}
