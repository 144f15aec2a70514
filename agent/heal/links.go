package heal

import (
	"context"
	"net"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"
)

// LinkEvent is an operational up/down change of a storage NIC.
type LinkEvent struct {
	Interface string
	Up        bool
}

// LinkSource delivers storage-link changes until ctx ends, then closes the
// channel.
type LinkSource interface {
	Subscribe(ctx context.Context) (<-chan LinkEvent, error)
}

// NetlinkLinks is the production LinkSource: rtnetlink link notifications.
type NetlinkLinks struct {
	// Interfaces are the storage NICs. Empty watches every link, which on a
	// node full of pod veths means an extra (cheap) scan per veth brought up.
	Interfaces []string
}

// resubscribeDelay paces re-opening the rtnetlink socket after it failed
// (the library closes its channel on ENOBUFS).
const resubscribeDelay = time.Second

// Subscribe opens the rtnetlink socket and forwards up/down transitions of
// the chosen interfaces; repeats of the same state (address or MTU
// changes) are dropped.
func (n NetlinkLinks) Subscribe(ctx context.Context) (<-chan LinkEvent, error) {
	updates, done, err := n.open()
	if err != nil {
		return nil, err
	}
	out := make(chan LinkEvent, 16)
	go func() {
		defer close(out)
		last := map[string]bool{}
		for {
			select {
			case <-ctx.Done():
				stop(updates, done)
				return
			case u, ok := <-updates:
				if !ok {
					close(done)
					klog.InfoS("Storage link events stopped, resubscribing", "delay", resubscribeDelay)
					if updates, done = n.reopen(ctx); updates == nil {
						return
					}
					continue
				}
				ev, wanted := n.event(u)
				if !wanted {
					continue
				}
				if up, seen := last[ev.Interface]; seen && up == ev.Up {
					continue
				}
				last[ev.Interface] = ev.Up
				select {
				case out <- ev:
				case <-ctx.Done():
					stop(updates, done)
					return
				}
			}
		}
	}()
	return out, nil
}

func (n NetlinkLinks) open() (chan netlink.LinkUpdate, chan struct{}, error) {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) { klog.V(2).InfoS("Link event socket reported an error", "err", err) },
	})
	if err != nil {
		close(done)
		return nil, nil, err
	}
	return updates, done, nil
}

func (n NetlinkLinks) reopen(ctx context.Context) (chan netlink.LinkUpdate, chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(resubscribeDelay):
		}
		updates, done, err := n.open()
		if err == nil {
			return updates, done
		}
		klog.ErrorS(err, "Resubscribing to link events failed")
	}
}

// stop closes the socket and drains the library's channel: its reader
// blocks on a send and would otherwise never see the close.
func stop(updates chan netlink.LinkUpdate, done chan struct{}) {
	close(done)
	go func() {
		for range updates {
		}
	}()
}

func (n NetlinkLinks) event(u netlink.LinkUpdate) (LinkEvent, bool) {
	if u.Link == nil {
		return LinkEvent{}, false
	}
	a := u.Attrs()
	if len(n.Interfaces) > 0 && !slices.Contains(n.Interfaces, a.Name) {
		return LinkEvent{}, false
	}
	// Some drivers never report an operstate; an administratively up link
	// with an unknown one is taken as up.
	up := a.Flags&net.FlagUp != 0 && (a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown)
	return LinkEvent{Interface: a.Name, Up: up}, true
}
