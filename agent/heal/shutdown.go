package heal

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"k8s.io/klog/v2"
)

// Shutdown prepares the node to go down: it stops repairs, so that
// none reconnects behind it with a long timeout, and writes ctrlLossTmo to
// every managed controller so that a reboot with the network already gone
// does not wait forever on an unreachable target. It reads sysfs itself and
// works whether or not Run is still going. Foreign and local controllers are
// left alone.
func (l *Loop) Shutdown(ctx context.Context, ctrlLossTmo int) error {
	if ctrlLossTmo < 0 {
		return fmt.Errorf("heal: shutdown ctrl_loss_tmo %d would mean reconnect forever", ctrlLossTmo)
	}
	l.draining.Store(true)
	l.cancelRepairs()
	all, err := l.cfg.Sysfs.Controllers()
	if err != nil {
		return fmt.Errorf("heal: list controllers for shutdown: %w", err)
	}
	var errs []error
	lowered := 0
	for _, c := range all {
		if !l.managed(c) {
			continue
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("controller %s left unchanged: %w", c.Name, err))
			continue
		}
		start := time.Now()
		err := l.lowerCtrlLossTmo(c.Name, ctrlLossTmo)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile: nothing left to hang on
		}
		l.metrics.ObserveHealAction(KindShutdownTmo, err, time.Since(start))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lowered++
	}
	klog.InfoS("Lowered ctrl_loss_tmo for shutdown", "controllers", lowered, "ctrlLossTmo", ctrlLossTmo, "errors", len(errs))
	return errors.Join(errs...)
}

// lowerCtrlLossTmo writes the timeout and reads it back. The kernel keeps it
// as a number of reconnect attempts, ceil(tmo / reconnect_delay), and prints
// attempts × delay, so the read-back may be rounded up; anything below the
// request, or "off", means the write did not take.
func (l *Loop) lowerCtrlLossTmo(name string, tmo int) error {
	if err := l.cfg.Sysfs.SetCtrlLossTmo(name, tmo); err != nil {
		return err
	}
	return l.checkCtrlLossTmo(name, tmo)
}

func (l *Loop) checkCtrlLossTmo(name string, tmo int) error {
	got, err := l.cfg.Sysfs.CtrlLossTmo(name)
	if err != nil {
		return err
	}
	if got < tmo {
		return fmt.Errorf("controller %s: ctrl_loss_tmo reads %d after writing %d", name, got, tmo)
	}
	return nil
}
