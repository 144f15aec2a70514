// Package workload is what the VM tests and the demo run as a volume's
// consumer would: writes that a database would consider committed.
package workload

import "os"

// WriteSynced creates (or truncates) path with data and fsyncs it: the
// write is durable once it returns nil.
func WriteSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
