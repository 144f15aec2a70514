package agent

import "context"

// SetProbe replaces the format gate's signature probe, so tests can make it fail.
func (n *Node) SetProbe(p func(ctx context.Context, path string) (bool, string, error)) { n.probe = p }
