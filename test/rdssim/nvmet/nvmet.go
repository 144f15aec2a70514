// Package nvmet makes the RDS simulator serve its exported disks through the
// Linux kernel's NVMe target (nvmet, nvmet-tcp), configured through
// configfs, so the driver's node side meets real NVMe/TCP controllers in the
// VM test bed. It also has levers the scenarios pull to break and heal the
// target.
//
// configfs layout used (root is /sys/kernel/config/nvmet):
//
//	subsystems/<nqn>/                 one per exported disk
//	    attr_allow_any_host           1 when the disk has no allowed hosts
//	    allowed_hosts/<host> -> hosts/<host>
//	    namespaces/1/                 the disk: file backend on its backing file
//	ports/<tcp port>/                 one per TCP port number, shared
//	    subsystems/<nqn> -> subsystems/<nqn>
//	hosts/<host>/                     one per allowed host NQN
//
// The port's configfs name is its TCP port number, which nvmet accepts as
// the port ID (a u16), so the mapping needs no bookkeeping.
package nvmet

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/rds-csi/rds-csi/test/rdssim"
)

// DefaultRoot is where nvmet's configfs tree lives once configfs is mounted.
const DefaultRoot = "/sys/kernel/config/nvmet"

// nvmetTCPModule exists while nvmet-tcp is loaded (or built in: it has
// module parameters, so it gets a directory either way).
const nvmetTCPModule = "/sys/module/nvmet_tcp"

// nsid is the only namespace each subsystem has, as on the RDS.
const nsid = "1"

// Config configures an Exporter.
type Config struct {
	// Root is the nvmet configfs directory; DefaultRoot when empty.
	Root string
	// Addr is the IPv4 address the TCP ports listen on; 127.0.0.1 when
	// empty.
	Addr string
	// FS performs every filesystem operation; the host's when nil.
	FS FS
}

// Exporter is an rdssim.Exporter backed by the kernel nvmet target. Its
// methods are safe for concurrent use: the simulator calls it under its own
// lock, while scenarios pull the fault levers from other goroutines.
type Exporter struct {
	root string
	addr string
	fs   FS

	mu sync.Mutex
	// subsystems are the NQNs this exporter exported.
	subsystems map[string]*subsystem
	// ports and hosts are the configfs items this exporter made or
	// adopted; Close removes them.
	ports map[int]bool
	hosts map[string]bool
	// down are the ports PortDown emptied.
	down map[int]bool
}

type subsystem struct {
	port      int
	withdrawn bool
}

var _ rdssim.Exporter = (*Exporter)(nil)

// New checks that nvmet is usable and returns an Exporter. It fails rather
// than letting the first export fail, because a simulator that cannot
// export is useless to the tests that ask for one.
func New(cfg Config) (*Exporter, error) {
	e := &Exporter{
		root: cfg.Root, addr: cfg.Addr, fs: cfg.FS,
		subsystems: map[string]*subsystem{},
		ports:      map[int]bool{},
		hosts:      map[string]bool{},
		down:       map[int]bool{},
	}
	if e.root == "" {
		e.root = DefaultRoot
	}
	if e.addr == "" {
		e.addr = "127.0.0.1"
	}
	if e.fs == nil {
		e.fs = osFS{}
	}
	if err := checkAddr(e.addr); err != nil {
		return nil, err
	}
	for _, dir := range []string{e.root, e.path("subsystems"), e.path("ports"), e.path("hosts")} {
		ok, err := e.fs.Exists(dir)
		if err != nil {
			return nil, fmt.Errorf("nvmet configfs: %w", err)
		}
		if !ok {
			return nil, fmt.Errorf("nvmet configfs: %s not found: mount configfs (mount -t configfs none /sys/kernel/config) and load nvmet and nvmet-tcp (modprobe nvmet-tcp)", dir)
		}
	}
	ok, err := e.fs.Exists(nvmetTCPModule)
	if err != nil {
		return nil, fmt.Errorf("nvmet-tcp: %w", err)
	}
	if !ok {
		return nil, fmt.Errorf("nvmet-tcp: %s not found: load it (modprobe nvmet-tcp)", nvmetTCPModule)
	}
	return e, nil
}

// Export makes d reachable as d.NQN on d.Port. It converges configfs on
// what d says, so a second call with the same disk writes nothing. The
// order is the one proven on kernels 6.1 and 6.12, with access control set
// before the subsystem is linked into a port so that no host can connect
// while the subsystem is open to any host by mistake.
func (e *Exporter) Export(d rdssim.Disk) error {
	hosts, err := checkDisk(d)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.export(d, hosts); err != nil {
		return fmt.Errorf("export %s: %w", d.NQN, err)
	}
	return nil
}

func (e *Exporter) export(d rdssim.Disk, hosts []string) (err error) {
	sub := e.subsysPath(d.NQN)
	exists, err := e.fs.Exists(sub)
	if err != nil {
		return err
	}
	if !exists {
		if err := e.fs.Mkdir(sub); err != nil {
			return err
		}
		// A half-made subsystem would be adopted as is by the next
		// Export; better to leave nothing.
		defer func() {
			if err != nil {
				err = errors.Join(err, e.teardown(d.NQN))
			}
		}()
		// The kernel picks a random serial; a fixed one lets a restarted
		// simulator look like the same RDS to hosts that remember it.
		if err := e.writeIfExists(filepath.Join(sub, "attr_serial"), stableHex(d.NQN, 10)); err != nil {
			return err
		}
	}
	rec := e.subsystems[d.NQN]
	if rec == nil {
		rec = &subsystem{port: d.Port}
		e.subsystems[d.NQN] = rec
	}
	if err := e.setAccess(d.NQN, hosts); err != nil {
		return err
	}
	if err := e.ensureNamespace(d.NQN, d.BackingFile); err != nil {
		return err
	}
	if err := e.ensurePort(d.Port); err != nil {
		return err
	}
	old := rec.port
	rec.port = d.Port
	if err := e.syncLinks(d.NQN); err != nil {
		return err
	}
	if old != d.Port {
		return e.dropPortIfUnused(old)
	}
	return nil
}

// setAccess makes the subsystem open to any host or to exactly hosts. The
// kernel refuses host links while attr_allow_any_host is 1 and refuses 1
// while host links exist, hence the two orders.
func (e *Exporter) setAccess(nqn string, hosts []string) error {
	sub := e.subsysPath(nqn)
	allowed := filepath.Join(sub, "allowed_hosts")
	linked, err := e.fs.ReadDir(allowed)
	if err != nil {
		return err
	}
	anyHost, err := e.read(filepath.Join(sub, "attr_allow_any_host"))
	if err != nil {
		return err
	}
	if len(hosts) == 0 {
		for _, h := range linked {
			if err := e.fs.Remove(filepath.Join(allowed, h)); err != nil {
				return err
			}
		}
		if anyHost != "1" {
			if err := e.write(filepath.Join(sub, "attr_allow_any_host"), "1"); err != nil {
				return err
			}
		}
		return e.dropUnusedHosts()
	}
	if anyHost != "0" {
		if err := e.write(filepath.Join(sub, "attr_allow_any_host"), "0"); err != nil {
			return err
		}
	}
	for _, h := range hosts {
		if err := e.ensureHost(h); err != nil {
			return err
		}
		if !slices.Contains(linked, h) {
			if err := e.fs.Symlink(e.path("hosts", h), filepath.Join(allowed, h)); err != nil {
				return err
			}
		}
	}
	for _, h := range linked {
		if !slices.Contains(hosts, h) {
			if err := e.fs.Remove(filepath.Join(allowed, h)); err != nil {
				return err
			}
		}
	}
	return e.dropUnusedHosts()
}

func (e *Exporter) ensureHost(host string) error {
	dir := e.path("hosts", host)
	ok, err := e.fs.Exists(dir)
	if err != nil {
		return err
	}
	if !ok {
		if err := e.fs.Mkdir(dir); err != nil {
			return err
		}
	}
	e.hosts[host] = true
	return nil
}

// ensureNamespace points namespace 1 at file and enables it. device_path,
// device_uuid and buffered_io can only change while it is disabled.
func (e *Exporter) ensureNamespace(nqn, file string) error {
	ns := e.nsPath(nqn)
	ok, err := e.fs.Exists(ns)
	if err != nil {
		return err
	}
	if !ok {
		if err := e.fs.Mkdir(ns); err != nil {
			return err
		}
	}
	enabled, err := e.read(filepath.Join(ns, "enable"))
	if err != nil {
		return err
	}
	path, err := e.read(filepath.Join(ns, "device_path"))
	if err != nil {
		return err
	}
	if enabled == "1" && path == file {
		return nil
	}
	if enabled == "1" {
		if err := e.write(filepath.Join(ns, "enable"), "0"); err != nil {
			return err
		}
	}
	if err := e.write(filepath.Join(ns, "device_path"), file); err != nil {
		return err
	}
	// The kernel picks a random UUID per namespace, and hosts identify a
	// namespace by it (wwid): a fixed one keeps a disk the same disk
	// across a simulator restart, as it is across an RDS reboot.
	if err := e.writeIfExists(filepath.Join(ns, "device_uuid"), stableUUID(nqn)); err != nil {
		return err
	}
	// A namespace Replace gave an NGUID of its own is not the disk's any
	// more; the kernel's default is none (zero).
	nguid := filepath.Join(ns, "device_nguid")
	if got, err := e.readIfExists(nguid); err != nil {
		return err
	} else if got != "" && got != zeroNGUID {
		if err := e.write(nguid, zeroNGUID); err != nil {
			return err
		}
	}
	// The test bed's backing files are on tmpfs, which has no O_DIRECT on
	// 6.1; without buffered_io the enable fails there.
	if err := e.writeIfExists(filepath.Join(ns, "buffered_io"), "1"); err != nil {
		return err
	}
	return e.write(filepath.Join(ns, "enable"), "1")
}

// zeroNGUID is how nvmet prints a namespace without an NGUID.
const zeroNGUID = "00000000-0000-0000-0000-000000000000"

// Replace puts another disk behind the namespace of nqn: the namespace is
// disabled, pointed at file, given a fresh random identity (device_uuid, and
// device_nguid where the kernel has it) and enabled again. It stands for a
// disk deleted and re-created under the same slot, or its file replaced,
// while hosts have it connected: the NQN and namespace ID stay, the
// identity hosts see (wwid "uuid.<UUID>") does not. nvmet tells connected
// hosts that the namespace changed; a host that rescans finds other
// identifiers under the same namespace ID ("identifiers changed for nsid
// 1"). It works whatever state the port is in: with the port down or the
// subsystem withdrawn, hosts meet the new namespace when they reconnect.
// It returns the new UUID.
//
// The simulator is not told: a later Export of the disk (a change of its
// allowed hosts, a restart) converges back on the disk's own file and
// identity.
func (e *Exporter) Replace(nqn, file string) (string, error) {
	if err := checkNQN("subsystem NQN", nqn); err != nil {
		return "", fmt.Errorf("replace: %w", err)
	}
	if err := checkBackingFile(file); err != nil {
		return "", fmt.Errorf("replace %s: %w", nqn, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	uuid, err := e.replace(nqn, file)
	if err != nil {
		return "", fmt.Errorf("replace %s: %w", nqn, err)
	}
	return uuid, nil
}

func (e *Exporter) replace(nqn, file string) (string, error) {
	if e.subsystems[nqn] == nil {
		return "", errors.New("not exported")
	}
	ns := e.nsPath(nqn)
	// Without device_uuid the kernel picks a random UUID at every enable,
	// which is a new identity too, but not one the caller can know.
	for _, attr := range []string{"enable", "device_uuid"} {
		ok, err := e.fs.Exists(filepath.Join(ns, attr))
		if err != nil {
			return "", err
		}
		if !ok {
			return "", fmt.Errorf("namespace %s has no %s", ns, attr)
		}
	}
	uuid, err := randomUUID()
	if err != nil {
		return "", err
	}
	nguid, err := randomUUID()
	if err != nil {
		return "", err
	}
	enabled, err := e.read(filepath.Join(ns, "enable"))
	if err != nil {
		return "", err
	}
	if enabled != "0" {
		if err := e.write(filepath.Join(ns, "enable"), "0"); err != nil {
			return "", err
		}
	}
	if err := e.write(filepath.Join(ns, "device_path"), file); err != nil {
		return "", err
	}
	if err := e.write(filepath.Join(ns, "device_uuid"), uuid); err != nil {
		return "", err
	}
	if err := e.writeIfExists(filepath.Join(ns, "device_nguid"), nguid); err != nil {
		return "", err
	}
	return uuid, e.write(filepath.Join(ns, "enable"), "1")
}

// ensurePort makes the TCP port's configfs port, or adopts an existing one
// with the same address. Its address can only be set while no subsystem is
// linked, so an existing port with another address is an error, not
// something to fix.
func (e *Exporter) ensurePort(port int) error {
	dir := e.portPath(port)
	want := [][2]string{
		{"addr_trtype", "tcp"},
		{"addr_adrfam", "ipv4"},
		{"addr_traddr", e.addr},
		{"addr_trsvcid", strconv.Itoa(port)},
	}
	ok, err := e.fs.Exists(dir)
	if err != nil {
		return err
	}
	if ok {
		for _, kv := range want {
			got, err := e.read(filepath.Join(dir, kv[0]))
			if err != nil {
				return err
			}
			if got != kv[1] {
				return fmt.Errorf("port %d already exists with %s %q, not %q", port, kv[0], got, kv[1])
			}
		}
		e.ports[port] = true
		return nil
	}
	if err := e.fs.Mkdir(dir); err != nil {
		return err
	}
	for _, kv := range want {
		if err := e.write(filepath.Join(dir, kv[0]), kv[1]); err != nil {
			return errors.Join(err, e.fs.Rmdir(dir))
		}
	}
	e.ports[port] = true
	return nil
}

// syncLinks links the subsystem into its port when it should be served
// (not withdrawn, port not down) and removes every other port link of it.
func (e *Exporter) syncLinks(nqn string) error {
	rec := e.subsystems[nqn]
	want := !rec.withdrawn && !e.down[rec.port]
	ports, err := e.fs.ReadDir(e.path("ports"))
	if err != nil {
		return err
	}
	for _, name := range ports {
		link := filepath.Join(e.path("ports", name), "subsystems", nqn)
		linked, err := e.fs.Exists(link)
		if err != nil {
			return err
		}
		if linked && (name != strconv.Itoa(rec.port) || !want) {
			if err := e.fs.Remove(link); err != nil {
				return err
			}
		}
	}
	if !want {
		return nil
	}
	link := filepath.Join(e.portPath(rec.port), "subsystems", nqn)
	linked, err := e.fs.Exists(link)
	if err != nil || linked {
		return err
	}
	// The port starts listening when its first subsystem is linked.
	return e.fs.Symlink(e.subsysPath(nqn), link)
}

// Unexport removes d's subsystem: port links first (so hosts lose it at
// once), then host links, then the namespace (disabled first), then the
// subsystem itself, then host entries and the port if nothing else uses
// them. Removing what is already gone is not an error.
func (e *Exporter) Unexport(d rdssim.Disk) error {
	if err := checkNQN("subsystem NQN", d.NQN); err != nil {
		return fmt.Errorf("unexport: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.teardown(d.NQN); err != nil {
		return fmt.Errorf("unexport %s: %w", d.NQN, err)
	}
	return nil
}

func (e *Exporter) teardown(nqn string) error {
	ports, err := e.fs.ReadDir(e.path("ports"))
	if err != nil {
		return err
	}
	for _, name := range ports {
		link := filepath.Join(e.path("ports", name), "subsystems", nqn)
		if err := e.removeLinkIfExists(link); err != nil {
			return err
		}
	}
	sub := e.subsysPath(nqn)
	exists, err := e.fs.Exists(sub)
	if err != nil {
		return err
	}
	if exists {
		if err := e.removeSubsystem(sub); err != nil {
			return err
		}
	}
	delete(e.subsystems, nqn)
	if err := e.dropUnusedHosts(); err != nil {
		return err
	}
	// Any port may have lost its last user, not only the recorded one:
	// the subsystem may have been linked elsewhere by an earlier run.
	for _, port := range slices.Sorted(maps.Keys(e.ports)) {
		if err := e.dropPortIfUnused(port); err != nil {
			return err
		}
	}
	return nil
}

func (e *Exporter) removeSubsystem(sub string) error {
	allowed := filepath.Join(sub, "allowed_hosts")
	hosts, err := e.fs.ReadDir(allowed)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if err := e.fs.Remove(filepath.Join(allowed, h)); err != nil {
			return err
		}
	}
	nsDir := filepath.Join(sub, "namespaces")
	namespaces, err := e.fs.ReadDir(nsDir)
	if err != nil {
		return err
	}
	for _, id := range namespaces {
		ns := filepath.Join(nsDir, id)
		enabled, err := e.read(filepath.Join(ns, "enable"))
		if err != nil {
			return err
		}
		if enabled != "0" {
			if err := e.write(filepath.Join(ns, "enable"), "0"); err != nil {
				return err
			}
		}
		if err := e.fs.Rmdir(ns); err != nil {
			return err
		}
	}
	return e.fs.Rmdir(sub)
}

// dropUnusedHosts removes the host entries this exporter made that no
// subsystem, this exporter's or another's, still allows.
func (e *Exporter) dropUnusedHosts() error {
	if len(e.hosts) == 0 {
		return nil
	}
	subs, err := e.fs.ReadDir(e.path("subsystems"))
	if err != nil {
		return err
	}
	for _, h := range slices.Sorted(maps.Keys(e.hosts)) {
		used := false
		for _, s := range subs {
			ok, err := e.fs.Exists(filepath.Join(e.subsysPath(s), "allowed_hosts", h))
			if err != nil {
				return err
			}
			used = used || ok
		}
		if used {
			continue
		}
		if err := e.rmdirIfExists(e.path("hosts", h)); err != nil {
			return err
		}
		delete(e.hosts, h)
	}
	return nil
}

// dropPortIfUnused removes a port this exporter made once none of its
// subsystems belong there (withdrawn ones and those of a downed port still
// do) and nothing else is linked into it.
func (e *Exporter) dropPortIfUnused(port int) error {
	if !e.ports[port] {
		return nil
	}
	for _, rec := range e.subsystems {
		if rec.port == port {
			return nil
		}
	}
	dir := e.portPath(port)
	exists, err := e.fs.Exists(dir)
	if err != nil {
		return err
	}
	if exists {
		linked, err := e.fs.ReadDir(filepath.Join(dir, "subsystems"))
		if err != nil || len(linked) > 0 {
			return err
		}
		if err := e.fs.Rmdir(dir); err != nil {
			return err
		}
	}
	delete(e.ports, port)
	delete(e.down, port)
	return nil
}

// Resize makes initiators see d's new size. Kernels with the namespace
// attribute revalidate_size (added in 2020, around Linux 5.8; 6.1 and 6.12
// have it) re-read the backing file's size and send a namespace-changed
// event, which hosts answer with a rescan: the device grows in place. Older
// kernels only read the size on enable, so the namespace is disabled and
// enabled again; hosts then see it vanish and come back, which is harsher
// than the RDS, so scenarios that resize need a kernel with
// revalidate_size.
func (e *Exporter) Resize(d rdssim.Disk) error {
	if err := checkNQN("subsystem NQN", d.NQN); err != nil {
		return fmt.Errorf("resize: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	ns := e.nsPath(d.NQN)
	ok, err := e.fs.Exists(ns)
	if err != nil {
		return fmt.Errorf("resize %s: %w", d.NQN, err)
	}
	if !ok {
		return fmt.Errorf("resize %s: not exported", d.NQN)
	}
	revalidate := filepath.Join(ns, "revalidate_size")
	ok, err = e.fs.Exists(revalidate)
	if err == nil && ok {
		err = e.write(revalidate, "1")
	} else if err == nil {
		err = e.write(filepath.Join(ns, "enable"), "0")
		if err == nil {
			err = e.write(filepath.Join(ns, "enable"), "1")
		}
	}
	if err != nil {
		return fmt.Errorf("resize %s: %w", d.NQN, err)
	}
	return nil
}

// PortDown unlinks every subsystem this exporter serves on port. With
// nothing linked, nvmet closes the listener, so initiators get connection
// refused and keep reconnecting until ctrl_loss_tmo. Disks exported on the
// port while it is down stay unlinked until PortUp.
func (e *Exporter) PortDown(port int) error {
	return e.setPort(port, true)
}

// PortUp links back what PortDown unlinked, except withdrawn subsystems.
func (e *Exporter) PortUp(port int) error {
	return e.setPort(port, false)
}

func (e *Exporter) setPort(port int, down bool) error {
	if err := checkPort(port); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.ports[port] {
		return fmt.Errorf("port %d: no disk is exported on it", port)
	}
	if down {
		e.down[port] = true
	} else {
		delete(e.down, port)
	}
	for _, nqn := range slices.Sorted(maps.Keys(e.subsystems)) {
		if e.subsystems[nqn].port != port {
			continue
		}
		if err := e.syncLinks(nqn); err != nil {
			return fmt.Errorf("port %d: %s: %w", port, nqn, err)
		}
	}
	return nil
}

// Withdraw unlinks one subsystem from its port while the port keeps
// listening, provided another subsystem is still linked there (with none
// left, nvmet closes the listener and this is PortDown for that port).
// Connects are then rejected with "invalid data parameter": kernel 6.1
// retries until ctrl_loss_tmo, 6.12 deletes the controller at once.
func (e *Exporter) Withdraw(nqn string) error {
	return e.setWithdrawn(nqn, true)
}

// Restore links back a subsystem Withdraw unlinked, unless its port is down.
func (e *Exporter) Restore(nqn string) error {
	return e.setWithdrawn(nqn, false)
}

func (e *Exporter) setWithdrawn(nqn string, withdrawn bool) error {
	if err := checkNQN("subsystem NQN", nqn); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	rec := e.subsystems[nqn]
	if rec == nil {
		return fmt.Errorf("%s is not exported", nqn)
	}
	rec.withdrawn = withdrawn
	if err := e.syncLinks(nqn); err != nil {
		return fmt.Errorf("%s: %w", nqn, err)
	}
	return nil
}

// Close removes every subsystem, port and host entry this exporter made, as
// if the RDS lost power: initiators see connection refused. A new Exporter
// given to rdssim.Start with the same StateDir exports the disks again,
// like the RDS coming back. It carries on past errors so that as much as
// possible is gone.
func (e *Exporter) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for _, nqn := range slices.Sorted(maps.Keys(e.subsystems)) {
		if err := e.teardown(nqn); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", nqn, err))
			delete(e.subsystems, nqn)
		}
	}
	for _, port := range slices.Sorted(maps.Keys(e.ports)) {
		if err := e.dropPortIfUnused(port); err != nil {
			errs = append(errs, fmt.Errorf("close port %d: %w", port, err))
		}
	}
	if err := e.dropUnusedHosts(); err != nil {
		errs = append(errs, fmt.Errorf("close hosts: %w", err))
	}
	return errors.Join(errs...)
}

func (e *Exporter) path(elem ...string) string {
	return filepath.Join(append([]string{e.root}, elem...)...)
}

func (e *Exporter) subsysPath(nqn string) string { return e.path("subsystems", nqn) }

func (e *Exporter) nsPath(nqn string) string {
	return filepath.Join(e.subsysPath(nqn), "namespaces", nsid)
}

func (e *Exporter) portPath(port int) string { return e.path("ports", strconv.Itoa(port)) }

// read returns an attribute without the newline configfs ends it with.
func (e *Exporter) read(path string) (string, error) {
	data, err := e.fs.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}

// write stores value with the newline echo adds: the exact bytes the shell
// recipe wrote on 6.1 and 6.12, and every nvmet store function strips it.
func (e *Exporter) write(path, value string) error {
	if err := e.fs.WriteFile(path, []byte(value+"\n")); err != nil {
		return fmt.Errorf("set %s to %q: %w", path, value, err)
	}
	return nil
}

// writeIfExists sets an attribute that older or differently built kernels
// may lack.
func (e *Exporter) writeIfExists(path, value string) error {
	ok, err := e.fs.Exists(path)
	if err != nil || !ok {
		return err
	}
	return e.write(path, value)
}

// readIfExists reads an attribute that older or differently built kernels
// may lack; a missing one reads "".
func (e *Exporter) readIfExists(path string) (string, error) {
	ok, err := e.fs.Exists(path)
	if err != nil || !ok {
		return "", err
	}
	return e.read(path)
}

func (e *Exporter) removeLinkIfExists(link string) error {
	ok, err := e.fs.Exists(link)
	if err != nil || !ok {
		return err
	}
	return e.fs.Remove(link)
}

func (e *Exporter) rmdirIfExists(dir string) error {
	ok, err := e.fs.Exists(dir)
	if err != nil || !ok {
		return err
	}
	return e.fs.Rmdir(dir)
}

// stableHex is n bytes of a hash of nqn, in hex: printable, as attr_serial
// requires, and the same every time.
func stableHex(nqn string, n int) string {
	sum := sha256.Sum256([]byte("rds-sim serial " + nqn))
	return hex.EncodeToString(sum[:n])
}

// randomUUID is an RFC 9562 version 4 UUID.
func randomUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b[:]), nil
}

// stableUUID derives a namespace UUID from nqn, marked as an RFC 9562
// version 8 (custom) UUID.
func stableUUID(nqn string) string {
	sum := sha256.Sum256([]byte("rds-sim namespace " + nqn))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x80
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b)
}

// formatUUID prints 16 bytes as nvmet reads and prints UUIDs and NGUIDs.
func formatUUID(b []byte) string {
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
