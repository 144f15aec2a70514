package rdssim

// Disk is what an Exporter is told about a file disk.
type Disk struct {
	Slot     string
	FilePath string // RouterOS path, "/storage-pool/csi/x.img"
	// BackingFile is the real file on this host that holds the disk's data.
	BackingFile   string
	Size          int64
	Port          int
	NQN           string
	AllowHostName string
}

// Exporter serves exported disks to initiators. The default does nothing, so
// the simulator only pretends to export; a later implementation exports
// through the kernel nvmet target inside the test VM. Calls are made with the
// simulator's state lock held, one at a time; an error fails the command
// that caused it.
type Exporter interface {
	// Export makes d reachable as d.NQN on d.Port, restricted to
	// d.AllowHostName when that is set. It is called when a disk is
	// created or switched to exported, when the allowed host changes, and
	// for every exported disk when the simulator starts, so it must be
	// idempotent.
	Export(d Disk) error
	// Unexport withdraws d. It is called when an exported disk is removed
	// or switched to not exported.
	Unexport(d Disk) error
	// Resize tells initiators that an exported disk changed size.
	Resize(d Disk) error
}

type noExport struct{}

func (noExport) Export(Disk) error   { return nil }
func (noExport) Unexport(Disk) error { return nil }
func (noExport) Resize(Disk) error   { return nil }
