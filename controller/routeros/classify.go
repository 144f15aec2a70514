package routeros

import (
	"context"
	"errors"
	"io"
	"net"
	"regexp"
	"strings"
	"syscall"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// maxOutputLen caps the RouterOS text carried in an Error: enough for any
// one-line RouterOS message with context, small enough that a runaway command
// cannot flood a log line or a gRPC status.
const maxOutputLen = 1024

// errConnLost marks a command whose connection broke while it ran. The command
// may or may not have taken effect on the RDS, which is why it is never
// retried here.
var errConnLost = errors.New("connection to RouterOS lost while the command ran; it may or may not have taken effect")

// outputRule maps RouterOS error text to a Kind. It is not established which
// stream RouterOS writes its messages to, nor whether it sets an exit status,
// so the same table is applied to both streams. The first matching rule wins:
// the more specific messages come first.
type outputRule struct {
	re   *regexp.Regexp
	kind Kind
}

var outputRules = []outputRule{
	{regexp.MustCompile(`no such item`), KindNotFound},
	{regexp.MustCompile(`\bnot found\b`), KindNotFound},
	{regexp.MustCompile(`not enough (free )?space`), KindNoSpace},
	{regexp.MustCompile(`\bno (free )?space\b`), KindNoSpace},
	{regexp.MustCompile(`disk (is )?full`), KindNoSpace},
	{regexp.MustCompile(`already have`), KindExists},
	{regexp.MustCompile(`already exists?`), KindExists},
	{regexp.MustCompile(`\bexists\b`), KindExists},
	{regexp.MustCompile(`invalid value`), KindInvalid},
	{regexp.MustCompile(`syntax error`), KindInvalid},
	{regexp.MustCompile(`expected end of command`), KindInvalid},
	{regexp.MustCompile(`bad command name`), KindInvalid},
	{regexp.MustCompile(`value of .* out of range`), KindInvalid},
	{regexp.MustCompile(`input does not match`), KindInvalid},
	{regexp.MustCompile(`missing value`), KindInvalid},
	{regexp.MustCompile(`invalid regular expression`), KindInvalid},
	{regexp.MustCompile(`too long`), KindInvalid},
}

// errorLeads start RouterOS messages that match no rule above but still
// report a failure.
var errorLeads = []string{"failure:", "error:", "expected ", "invalid ", "missing value", "bad ", "rds-sim:"}

// Classify turns the outcome of one command into a classified *Error, or nil
// when the command succeeded. runErr is what running the command returned
// (nil, an *ssh.ExitError, an *ssh.ExitMissingError, or a transport or
// context error); stdout and stderr are the two streams as captured.
//
// Successful commands print records (and may print nothing), and record
// values can contain words such as "exists" inside a file name. So stdout is
// searched for error text only from a line that starts like a RouterOS
// message, unless the exit status already says the command failed; stderr is
// error text as a whole.
func Classify(cmdKind string, runErr error, stdout, stderr string) error {
	var classified *Error
	if errors.As(runErr, &classified) {
		return classified
	}
	if kind, ok := transportKind(runErr); ok {
		return &Error{Kind: kind, Command: cmdKind, Output: capOutput(stderr), Err: runErr}
	}

	var exitErr *ssh.ExitError
	failedExit := errors.As(runErr, &exitErr)
	var missing *ssh.ExitMissingError
	if runErr != nil && !failedExit && !errors.As(runErr, &missing) {
		// Neither an exit status nor a known transport failure: something we
		// cannot explain, so never a success.
		return &Error{Kind: KindInternal, Command: cmdKind, Output: capOutput(errorText(stdout, stderr, true)), Err: runErr}
	}

	text := errorText(stdout, stderr, failedExit)
	if text == "" && !failedExit {
		return nil
	}
	kind := KindInternal
	lower := strings.ToLower(text)
	for _, rule := range outputRules {
		if rule.re.MatchString(lower) {
			kind = rule.kind
			break
		}
	}
	var err error
	if failedExit {
		err = runErr
	}
	return &Error{Kind: kind, Command: cmdKind, Output: capOutput(text), Err: err}
}

// errorText returns the part of the output that reports a failure, or "" when
// nothing does. When the exit status says the command failed, all of it does.
func errorText(stdout, stderr string, failed bool) string {
	stdout = normalizeNewlines(stdout)
	stderr = strings.TrimSpace(normalizeNewlines(stderr))
	if failed {
		return strings.TrimSpace(strings.Join(nonEmpty(stderr, strings.TrimSpace(stdout)), "\n"))
	}
	var fromStdout string
	lines := strings.Split(stdout, "\n")
	for i, line := range lines {
		if startsLikeError(strings.ToLower(strings.TrimSpace(line))) {
			fromStdout = strings.TrimSpace(strings.Join(lines[i:], "\n"))
			break
		}
	}
	return strings.Join(nonEmpty(stderr, fromStdout), "\n")
}

func startsLikeError(line string) bool {
	if line == "" {
		return false
	}
	for _, lead := range errorLeads {
		if strings.HasPrefix(line, lead) {
			return true
		}
	}
	for _, rule := range outputRules {
		if loc := rule.re.FindStringIndex(line); loc != nil && loc[0] == 0 {
			return true
		}
	}
	return false
}

// transportKind recognises failures of the connection or of the deadline,
// which say nothing about the command itself.
func transportKind(err error) (Kind, bool) {
	if err == nil {
		return 0, false
	}
	// Context errors first: context.DeadlineExceeded is also a net.Error.
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return KindTimeout, true
	}
	var netErr net.Error
	var openErr *ssh.OpenChannelError
	switch {
	case errors.Is(err, errConnLost),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		errors.As(err, &netErr),
		errors.As(err, &openErr):
		return KindUnavailable, true
	}
	msg := err.Error()
	if strings.Contains(msg, "ssh: handshake failed") || strings.Contains(msg, "ssh: unable to authenticate") {
		return KindUnavailable, true
	}
	return 0, false
}

func normalizeNewlines(s string) string {
	return strings.ReplaceAll(s, "\r\n", "\n")
}

func nonEmpty(parts ...string) []string {
	out := parts[:0]
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// capOutput trims s and cuts it to maxOutputLen bytes on a rune boundary.
func capOutput(s string) string {
	s = strings.TrimSpace(normalizeNewlines(s))
	if len(s) <= maxOutputLen {
		return s
	}
	cut := maxOutputLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
