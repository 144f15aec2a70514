package routeros

import (
	"errors"
	"fmt"
)

// Kind classifies a failed RouterOS command. The controller maps each kind to
// one gRPC code at its RPC boundary; nothing below that boundary knows gRPC.
type Kind int

const (
	// KindInternal is anything not recognised: a failure we cannot explain.
	KindInternal Kind = iota
	// KindUnavailable means the RDS could not be reached or the session broke.
	KindUnavailable
	// KindTimeout means the command did not finish before its deadline.
	KindTimeout
	// KindNotFound means the item the command named does not exist.
	KindNotFound
	// KindNoSpace means the pool has not enough free space.
	KindNoSpace
	// KindInvalid means RouterOS rejected a value or the syntax.
	KindInvalid
	// KindExists means an item with that identity exists already.
	KindExists
)

func (k Kind) String() string {
	switch k {
	case KindUnavailable:
		return "unavailable"
	case KindTimeout:
		return "timeout"
	case KindNotFound:
		return "not-found"
	case KindNoSpace:
		return "no-space"
	case KindInvalid:
		return "invalid"
	case KindExists:
		return "exists"
	default:
		return "internal"
	}
}

// Error is a classified RouterOS failure. Command is the command's kind label
// (never its full text, which may carry names an operator did not expect in
// logs); Output is what RouterOS printed, trimmed.
type Error struct {
	Kind    Kind
	Command string
	Output  string
	Err     error
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("routeros %s: %s", e.Command, e.Kind)
	if e.Output != "" {
		msg += ": " + e.Output
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the Kind of err, or KindInternal when err carries none.
func KindOf(err error) Kind {
	var re *Error
	if errors.As(err, &re) {
		return re.Kind
	}
	return KindInternal
}

// IsKind reports whether err is a RouterOS error of kind k.
func IsKind(err error, k Kind) bool {
	var re *Error
	return errors.As(err, &re) && re.Kind == k
}
