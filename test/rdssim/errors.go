package rdssim

import "fmt"

// The texts the simulator prints when a command fails. They are RouterOS-like
// guesses (see docs/routeros.md, "Uncertain on real hardware"), kept in one
// place so tests, docs and the client's classifier agree on them. Texts with
// a %d take the 1-based column of the offending token; %s takes a name.
const (
	// Parsing.
	ErrTextSyntax         = "syntax error (line 1 column %d)"
	ErrTextEndOfCommand   = "expected end of command (line 1 column %d)"
	ErrTextBadCommandName = "bad command name %s (line 1 column %d)"
	ErrTextInvalidValue   = "invalid value for argument %s"
	ErrTextMissingValue   = "missing value(s) of argument(s) %s"
	ErrTextBadRegex       = "invalid regular expression"

	// Items.
	ErrTextNoSuchItem = "no such item"

	// /disk.
	ErrTextNoSpace        = "failure: not enough space"
	ErrTextSlotTooLong    = "failure: slot name too long"
	ErrTextSlotExists     = "failure: disk with such slot already exists"
	ErrTextFileExists     = "failure: file already exists"
	ErrTextNQNExists      = "failure: nvme-tcp-server-nqn already exists"
	ErrTextNQNRequired    = "failure: nvme-tcp-server-nqn must be set for nvme-tcp-export"
	ErrTextBadFilePath    = "failure: file-path must be inside a mounted disk"
	ErrTextNotFileDisk    = "failure: not a file disk"
	ErrTextCopySmaller    = "failure: file-size smaller than copy-from source"
	ErrTextCannotRemove   = "failure: can not remove this disk"
	ErrTextExportFailed   = "failure: nvme-tcp export failed: %s"
	ErrTextIOFailed       = "failure: %s"
	ErrTextFileInUse      = "failure: file is in use by a disk"
	ErrTextDirNotEmpty    = "failure: directory not empty"
	ErrTextCannotRemoveFS = "failure: can not remove a mounted disk"

	// ErrTextNotSimulated marks RouterOS features the simulator does not
	// reproduce (for example `print` without `detail`). It is deliberately
	// not RouterOS-like, so a client that depends on such a feature fails
	// loudly against the simulator instead of passing by accident.
	ErrTextNotSimulated = "rds-sim: not simulated: %s"
)

// cmdError is a failed command: its text is printed as RouterOS would.
type cmdError struct{ text string }

func (e *cmdError) Error() string { return e.text }

func failf(format string, args ...any) *cmdError {
	return &cmdError{text: fmt.Sprintf(format, args...)}
}

func fail(text string) *cmdError { return &cmdError{text: text} }
