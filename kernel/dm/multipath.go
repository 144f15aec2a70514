package dm

import "fmt"

// MultipathTable is a one-path dm-multipath table over the block device
// major:minor of the given size, which queues I/O while the path is gone
// (queue_if_no_path) instead of failing it. These are the tables that kept
// writers free of I/O errors across a controller loss and a reconnect on
// kernels 6.1 and 6.12.
//
// bioBased must be true when the device below is bio-based, as an NVMe
// native-multipath head (nvme_core.multipath=Y) is: a request-based table
// over it is refused ("non-request-stackable devices"). With
// nvme_core.multipath=N the namespace is request-based and so is the table.
//
// Parameters, in the kernel's order: the feature count and features; no
// hardware handler (0); one priority group (1), the first one first (1);
// the service-time selector with no arguments (0); one path (1) taking two
// arguments (2): the device, its repeat count 1 and relative throughput 1.
func MultipathTable(sectors uint64, major, minor uint32, bioBased bool) []Target {
	features := "1 queue_if_no_path"
	if bioBased {
		features = "3 queue_if_no_path queue_mode bio"
	}
	return []Target{{
		Start:  0,
		Length: sectors,
		Type:   "multipath",
		Params: fmt.Sprintf("%s 0 1 1 service-time 0 1 2 %d:%d 1 1", features, major, minor),
	}}
}
