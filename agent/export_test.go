package agent

import "context"

// SetProbe replaces the format gate's signature probe, so tests can make it fail.
func (n *Node) SetProbe(p func(ctx context.Context, path string) (bool, string, error)) { n.probe = p }

// SetSize replaces how the multipath front measures the namespace.
func (m *Multipath) SetSize(f func(ctx context.Context, path string) (int64, error)) { m.size = f }
