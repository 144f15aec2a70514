//go:build e2eguest

package guest

import "testing"

// TestSmoke proves the bed before the driver is involved: nvmet serves a
// subsystem, the initiator connects to it, and a namespace takes data.
func TestSmoke(t *testing.T) {
	fr := connectForeign(t, "smoke", 4490)
	fr.assertLive(t)
	p := newPayload(t, 1<<20)
	dev := device(t, fr.nqn)
	p.writeAt(t, dev, 4096)
	p.checkAt(t, "raw namespace", dev, 4096)
}
