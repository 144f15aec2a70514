//go:build !faultinject

package fault

// Enabled tells whether this build can crash at a point.
const Enabled = false

// Crash does nothing without the faultinject tag.
func Crash(string) {}

// Armed is false without the faultinject tag.
func Armed(string) bool { return false }

// CrashAfterPartialWrite does nothing without the faultinject tag.
func CrashAfterPartialWrite(string, string) {}

// CrashWhileRunning does nothing without the faultinject tag.
func CrashWhileRunning(string, string, ...string) {}
