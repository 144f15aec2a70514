//go:build e2eguest

package guest

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/kernel/dm"
	"github.com/rds-csi/rds-csi/volume"
)

// TestHealShortOutage: the target goes away for a few seconds and comes
// back. With ctrl_loss_tmo=-1 the kernel keeps the controller and retries;
// the agent must see the outage (no uevent announces it: only its scan of
// the controller state can), hold the workload's I/O rather than fail it,
// and report the volume live again once the kernel reconnected, counting
// the reconnect. Nothing is renumbered, nothing is repaired.
//
// With fastIoFailTmo set, the kernel fails the held I/O after that many
// seconds; the multipath front takes the error as a failed path and queues
// instead, so the workload still sees none. The front's path stays failed
// after the reconnect unless the agent reinstates it (Node.Notify):
// without that, the write would wait forever.
func TestHealShortOutage(t *testing.T) {
	for _, tc := range []struct {
		name, fsType string
		fastIOFail   bool
	}{
		{"block", "block", false},
		{"ext4", "ext4", false},
		{"block, fastIoFailTmo", "block", true},
	} {
		fsType := tc.fsType
		t.Run(tc.name, func(t *testing.T) {
			h := newHealFixture(t, healOptions{})
			params := map[string]string{volume.KeyCtrlLossTmo: "-1"}
			name := "heal-outage-" + fsType
			if tc.fastIOFail {
				params[volume.KeyFastIOFailTmo] = "1"
				name = "heal-fastfail-" + fsType
			}
			v := h.create(name, fsType, params)
			h.stageAndPublish(t, v)
			a := h.agent
			ctrls := controllersOf(t, v.nqn)
			dev := volumeDev(t, v)

			// Where each payload goes: files on the filesystem, or
			// offsets of the raw device through the publish target.
			where := func(name string, off int64) (string, int64) {
				if fsType == "block" {
					return v.target, off
				}
				return filepath.Join(v.target, name), -1
			}
			put := func(p payload, name string, off int64) {
				if path, o := where(name, off); o >= 0 {
					p.writeAt(t, path, o)
				} else {
					p.writeFile(t, path)
				}
			}
			check := func(p payload, step, name string, off int64) {
				if path, o := where(name, off); o >= 0 {
					p.checkAt(t, step, path, o)
				} else {
					p.checkFile(t, step, path)
				}
			}

			before, during, after := newPayload(t, 1<<20), newPayload(t, 1<<20), newPayload(t, 1<<20)
			put(before, "before", 1<<20)
			baseline := map[string]float64{}
			for _, m := range []string{"rds_node_reconnects_total", "rds_node_controller_losses_total", "rds_node_renumberings_total"} {
				baseline[m] = a.volumeCounter(t, m, v)
			}

			downAt := time.Now()
			must(t, "PortDown", h.exp.PortDown(portOf(t, v)))
			a.waitState(t, v, 30*time.Second, heal.StateReconnecting)
			t.Logf("the agent saw the outage %v after the port went down (scan interval %v)", time.Since(downAt).Round(time.Millisecond), healScanInterval)

			path, off := where("during", 4<<20)
			w := startWrite(path, off, during.data)
			w.blocked(t, 3*time.Second)
			if tc.fastIOFail {
				front := agent.MapperName(v.id)
				waitFor(t, "the front fails its path", 30*time.Second, func() bool {
					st, err := dm.Status(ctxFor(t, 10*time.Second), front)
					return err == nil && len(st) == 1 && strings.Contains(st[0], " "+dev.String()+" F ")
				})
				t.Logf("the kernel failed the held I/O after fast_io_fail_tmo; the front %s failed its path and queues", front)
			}

			must(t, "PortUp", h.exp.PortUp(portOf(t, v)))
			a.waitState(t, v, healDeadline, heal.StateLive)
			if err := w.result(t, healDeadline); err != nil {
				t.Fatalf("the write held during the outage failed after the target came back: %v", err)
			}
			t.Logf("the held write completed %v after the port went down", time.Since(downAt).Round(time.Millisecond))

			put(after, "after", 8<<20)
			check(before, "written before the outage", "before", 1<<20)
			check(during, "written during the outage", "during", 4<<20)
			check(after, "written after the outage", "after", 8<<20)

			if got, was := a.volumeCounter(t, "rds_node_reconnects_total", v), baseline["rds_node_reconnects_total"]; got <= was {
				t.Errorf("rds_node_reconnects_total{volume=%q} = %v, was %v before the outage: the reconnect was not counted", v.id, got, was)
			}
			for _, m := range []string{"rds_node_controller_losses_total", "rds_node_renumberings_total"} {
				if got, was := a.volumeCounter(t, m, v), baseline[m]; got != was {
					t.Errorf("%s{volume=%q} went from %v to %v in an outage the kernel rode out", m, v.id, was, got)
				}
			}
			if row := a.statusRow(t, v); row[4] != string(heal.StateLive) {
				t.Errorf("the status table shows %v, want state live", row)
			} else {
				t.Logf("status row: %v", row)
			}
			a.assertSequence(t, v.id, heal.StateLive, heal.StateReconnecting, heal.StateLive)
			// The kernel rode the outage out on the same controller and
			// device: nothing needed a repair.
			if got := controllersOf(t, v.nqn); len(got) != 1 || ctrlName(got[0]) != ctrlName(ctrls[0]) {
				t.Errorf("controllers after the outage: %v, before: %v", got, ctrls)
			}
			if got := volumeDev(t, v); got != dev {
				t.Errorf("the device changed from %s to %s in an outage without controller loss", dev, got)
			}
			h.teardown(t, v)
		})
	}
}
