package nvmet

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// fakeConfigfs emulates the parts of nvmet's configfs the exporter uses,
// including the rules that make ordering matter: mkdir creates attributes
// and default groups, rmdir refuses items that hold links or hand-made
// children or are still linked to, an enabled namespace cannot be removed
// or repointed, a port's address is frozen while subsystems are linked, and
// allow_any_host and host links exclude each other.
type fakeConfigfs struct {
	mu    sync.Mutex
	root  string
	nodes map[string]*fakeNode
	// ops lists every change, root-relative, in order.
	ops []string
	// failWrites makes writes to root-relative paths fail.
	failWrites map[string]error
	kernel     kernelFeatures
}

type fakeNode struct {
	dir       bool
	link      string // absolute target when this is a symlink
	data      string
	initial   string
	auto      bool // made by the kernel: attributes and default groups
	writeOnly bool
}

type kernelFeatures struct {
	noRevalidate bool // before revalidate_size existed
	noBufferedIO bool // before buffered_io existed
	noNGUID      bool // a kernel without device_nguid
	noUUID       bool // a kernel without device_uuid
}

const fakeRoot = "/fake/config/nvmet"

func newFakeConfigfs(k kernelFeatures) *fakeConfigfs {
	f := &fakeConfigfs{root: fakeRoot, nodes: map[string]*fakeNode{}, failWrites: map[string]error{}, kernel: k}
	for _, d := range []string{"/fake", "/fake/config", fakeRoot, fakeRoot + "/subsystems", fakeRoot + "/ports", fakeRoot + "/hosts", "/sys", "/sys/module", nvmetTCPModule} {
		f.nodes[d] = &fakeNode{dir: true, auto: true}
	}
	return f
}

func (f *fakeConfigfs) rel(p string) string {
	r, err := filepath.Rel(f.root, p)
	if err != nil || strings.HasPrefix(r, "..") {
		return p
	}
	return r
}

func pathErr(op, p string, err error) error { return &fs.PathError{Op: op, Path: p, Err: err} }

func (f *fakeConfigfs) addAuto(dir string, files map[string]string, dirs ...string) {
	for name, v := range files {
		f.nodes[filepath.Join(dir, name)] = &fakeNode{auto: true, data: v, initial: v}
	}
	for _, d := range dirs {
		f.nodes[filepath.Join(dir, d)] = &fakeNode{dir: true, auto: true}
	}
}

func (f *fakeConfigfs) Mkdir(p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.nodes[p]; ok {
		return pathErr("mkdir", p, fs.ErrExist)
	}
	if parent, ok := f.nodes[filepath.Dir(p)]; !ok || !parent.dir {
		return pathErr("mkdir", p, fs.ErrNotExist)
	}
	parts := strings.Split(f.rel(p), "/")
	switch {
	case len(parts) == 2 && parts[0] == "subsystems":
		f.addAuto(p, map[string]string{"attr_allow_any_host": "0\n", "attr_serial": "random\n", "attr_model": "Linux\n"},
			"namespaces", "allowed_hosts")
	case len(parts) == 4 && parts[0] == "subsystems" && parts[2] == "namespaces":
		if n, err := fmt.Sscanf(parts[3], "%d", new(uint32)); n != 1 || err != nil || parts[3] == "0" {
			return pathErr("mkdir", p, syscall.EINVAL)
		}
		attrs := map[string]string{"device_path": "\n", "device_uuid": "random\n", "device_nguid": zeroNGUID + "\n", "enable": "0\n", "ana_grpid": "1\n"}
		if !f.kernel.noBufferedIO {
			attrs["buffered_io"] = "0\n"
		}
		if f.kernel.noNGUID {
			delete(attrs, "device_nguid")
		}
		if f.kernel.noUUID {
			delete(attrs, "device_uuid")
		}
		f.addAuto(p, attrs)
		if !f.kernel.noRevalidate {
			f.nodes[filepath.Join(p, "revalidate_size")] = &fakeNode{auto: true, writeOnly: true}
		}
	case len(parts) == 2 && parts[0] == "ports":
		if n, err := fmt.Sscanf(parts[1], "%d", new(uint16)); n != 1 || err != nil {
			return pathErr("mkdir", p, syscall.EINVAL)
		}
		f.addAuto(p, map[string]string{"addr_trtype": "\n", "addr_adrfam": "\n", "addr_traddr": "\n", "addr_trsvcid": "\n", "addr_treq": "not specified\n"},
			"subsystems", "referrals")
	case len(parts) == 2 && parts[0] == "hosts":
	default:
		return pathErr("mkdir", p, fs.ErrPermission)
	}
	f.nodes[p] = &fakeNode{dir: true}
	f.ops = append(f.ops, "mkdir "+f.rel(p))
	return nil
}

func (f *fakeConfigfs) under(dir string) []string {
	var out []string
	for p := range f.nodes {
		if strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	return out
}

func (f *fakeConfigfs) Rmdir(p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[p]
	switch {
	case !ok:
		return pathErr("rmdir", p, fs.ErrNotExist)
	case !n.dir:
		return pathErr("rmdir", p, syscall.ENOTDIR)
	case n.auto:
		return pathErr("rmdir", p, fs.ErrPermission)
	}
	for _, c := range f.under(p) {
		if !f.nodes[c].auto {
			return pathErr("rmdir", p, syscall.ENOTEMPTY)
		}
	}
	for _, other := range f.nodes {
		if other.link == p {
			return pathErr("rmdir", p, syscall.EBUSY)
		}
	}
	if f.nodes[filepath.Join(p, "enable")] != nil && f.nodes[filepath.Join(p, "enable")].data == "1\n" {
		return pathErr("rmdir", p, syscall.EBUSY)
	}
	for _, c := range f.under(p) {
		delete(f.nodes, c)
	}
	delete(f.nodes, p)
	f.ops = append(f.ops, "rmdir "+f.rel(p))
	return nil
}

var (
	uuidRE  = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	nguidRE = regexp.MustCompile(`^([0-9a-fA-F]{2}[-:]?){16}$`)
)

func parseBool(v string) (string, bool) {
	switch v {
	case "0", "1":
		return v, true
	}
	return "", false
}

func (f *fakeConfigfs) WriteFile(p string, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[p]
	switch {
	case !ok:
		return pathErr("open", p, fs.ErrNotExist)
	case n.dir:
		return pathErr("open", p, syscall.EISDIR)
	case n.link != "":
		return pathErr("open", p, syscall.EINVAL)
	}
	val, found := strings.CutSuffix(string(data), "\n")
	if !found || strings.Contains(val, "\n") {
		return pathErr("write", p, syscall.EINVAL)
	}
	if err := f.failWrites[f.rel(p)]; err != nil {
		return pathErr("write", p, err)
	}
	dir, name := filepath.Dir(p), filepath.Base(p)
	enabled := func() bool { e := f.nodes[filepath.Join(dir, "enable")]; return e != nil && e.data == "1\n" }
	switch name {
	case "device_path", "device_uuid", "device_nguid", "buffered_io":
		if enabled() {
			return pathErr("write", p, syscall.EBUSY)
		}
		if name == "buffered_io" {
			if _, ok := parseBool(val); !ok {
				return pathErr("write", p, syscall.EINVAL)
			}
		}
		// uuid_parse wants the 36-character form; the NGUID store takes 16
		// hex pairs, each optionally followed by '-' or ':'.
		if name == "device_uuid" && !uuidRE.MatchString(val) ||
			name == "device_nguid" && !nguidRE.MatchString(val) {
			return pathErr("write", p, syscall.EINVAL)
		}
	case "enable":
		if _, ok := parseBool(val); !ok {
			return pathErr("write", p, syscall.EINVAL)
		}
		if val == "1" && f.nodes[filepath.Join(dir, "device_path")].data == "\n" {
			return pathErr("write", p, syscall.EINVAL)
		}
	case "revalidate_size":
		if _, ok := parseBool(val); !ok || !enabled() {
			return pathErr("write", p, syscall.EINVAL)
		}
	case "attr_allow_any_host":
		if _, ok := parseBool(val); !ok {
			return pathErr("write", p, syscall.EINVAL)
		}
		if val == "1" && len(f.children(filepath.Join(dir, "allowed_hosts"))) > 0 {
			return pathErr("write", p, syscall.EINVAL)
		}
	case "addr_trtype", "addr_adrfam", "addr_traddr", "addr_trsvcid":
		if len(f.children(filepath.Join(dir, "subsystems"))) > 0 {
			return pathErr("write", p, syscall.EACCES)
		}
		if name == "addr_trtype" && !slices.Contains([]string{"tcp", "rdma", "fc", "loop"}, val) ||
			name == "addr_adrfam" && !slices.Contains([]string{"ipv4", "ipv6", "ib", "fc", "loop"}, val) {
			return pathErr("write", p, syscall.EINVAL)
		}
	}
	if !n.writeOnly {
		n.data = string(data)
	}
	f.ops = append(f.ops, fmt.Sprintf("write %s=%s", f.rel(p), val))
	return nil
}

func (f *fakeConfigfs) ReadFile(p string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[p]
	switch {
	case !ok:
		return nil, pathErr("open", p, fs.ErrNotExist)
	case n.dir:
		return nil, pathErr("read", p, syscall.EISDIR)
	case n.writeOnly:
		return nil, pathErr("open", p, fs.ErrPermission)
	}
	return []byte(n.data), nil
}

func (f *fakeConfigfs) Symlink(target, link string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.nodes[link]; ok {
		return pathErr("symlink", link, fs.ErrExist)
	}
	t, ok := f.nodes[target]
	if !ok || !t.dir || t.auto {
		return pathErr("symlink", link, fs.ErrNotExist)
	}
	dir := filepath.Dir(link)
	if _, ok := f.nodes[dir]; !ok {
		return pathErr("symlink", link, fs.ErrNotExist)
	}
	if filepath.Base(link) != filepath.Base(target) {
		return pathErr("symlink", link, syscall.EINVAL)
	}
	switch {
	case filepath.Base(dir) == "subsystems" && filepath.Dir(filepath.Dir(dir)) == f.root+"/ports" &&
		filepath.Dir(target) == f.root+"/subsystems":
		port := filepath.Dir(dir)
		for _, a := range []string{"addr_trtype", "addr_adrfam", "addr_traddr", "addr_trsvcid"} {
			if f.nodes[filepath.Join(port, a)].data == "\n" {
				return pathErr("symlink", link, syscall.EINVAL)
			}
		}
	case filepath.Base(dir) == "allowed_hosts" && filepath.Dir(target) == f.root+"/hosts":
		if f.nodes[filepath.Join(filepath.Dir(dir), "attr_allow_any_host")].data == "1\n" {
			return pathErr("symlink", link, syscall.EINVAL)
		}
	default:
		return pathErr("symlink", link, fs.ErrPermission)
	}
	f.nodes[link] = &fakeNode{link: target}
	f.ops = append(f.ops, fmt.Sprintf("link %s -> %s", f.rel(link), f.rel(target)))
	return nil
}

func (f *fakeConfigfs) Remove(link string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[link]
	switch {
	case !ok:
		return pathErr("unlink", link, fs.ErrNotExist)
	case n.link == "":
		return pathErr("unlink", link, fs.ErrPermission)
	}
	delete(f.nodes, link)
	f.ops = append(f.ops, "unlink "+f.rel(link))
	return nil
}

func (f *fakeConfigfs) Exists(p string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.nodes[p]
	return ok, nil
}

func (f *fakeConfigfs) children(dir string) []string {
	var names []string
	for p := range f.nodes {
		if filepath.Dir(p) == dir && p != dir {
			names = append(names, filepath.Base(p))
		}
	}
	slices.Sort(names)
	return names
}

func (f *fakeConfigfs) ReadDir(p string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[p]
	switch {
	case !ok:
		return nil, pathErr("open", p, fs.ErrNotExist)
	case !n.dir:
		return nil, pathErr("readdir", p, syscall.ENOTDIR)
	}
	return f.children(p), nil
}

// tree lists, root-relative and sorted, what was made by hand and every
// attribute that differs from what the kernel put there.
func (f *fakeConfigfs) tree() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for p, n := range f.nodes {
		if !strings.HasPrefix(p, f.root+"/") {
			continue
		}
		r := f.rel(p)
		switch {
		case n.link != "":
			out = append(out, r+" -> "+f.rel(n.link))
		case n.dir && !n.auto:
			out = append(out, r+"/")
		case !n.dir && n.data != n.initial:
			out = append(out, r+"="+strings.TrimSuffix(n.data, "\n"))
		}
	}
	slices.Sort(out)
	return out
}

// takeOps returns the changes since the last call.
func (f *fakeConfigfs) takeOps() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops := f.ops
	f.ops = nil
	return ops
}
