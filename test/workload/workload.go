// Package workload is what the VM tests and the demo run as a volume's
// consumer would: writes that a database would consider committed; and
// the CPU calibration the benchmarks compare host and guest with.
package workload

import (
	"crypto/sha256"
	"os"
	"time"
)

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

// CalibrationBytes is how much Calibrate hashes.
const CalibrationBytes = 64 << 20

// Calibrate hashes CalibrationBytes with SHA-256 on one goroutine and
// returns how long that took. The benchmarks run it on the host and in the
// emulated guest: the ratio says how much slower the guest's CPU is, which
// puts CPU times measured in the guest into proportion.
func Calibrate() time.Duration {
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	h := sha256.New()
	start := time.Now()
	for range CalibrationBytes / len(buf) {
		h.Write(buf)
	}
	_ = h.Sum(nil)
	return time.Since(start)
}
