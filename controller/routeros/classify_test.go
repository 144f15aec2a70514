package routeros

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// failedExit stands for the error ssh.Session.Run returns for a non-zero
// exit status (its status field cannot be set outside the ssh package; the
// client tests get real ones from a server).
func failedExit() error { return &ssh.ExitError{} }

func TestClassifyMapsRouterOSMessagesToKinds(t *testing.T) {
	messages := []struct {
		text string
		want Kind
	}{
		{"no such item", KindNotFound},
		{"failure: no such item (4)", KindNotFound},
		{"failure: file not found", KindNotFound},
		{"failure: not enough space", KindNoSpace},
		{"failure: not enough free space on storage-pool", KindNoSpace},
		{"failure: no space left on device", KindNoSpace},
		{"failure: disk full", KindNoSpace},
		{"invalid value for argument file-size", KindInvalid},
		{"syntax error (line 1 column 12)", KindInvalid},
		{"expected end of command (line 1 column 40)", KindInvalid},
		{"bad command name dsk (line 1 column 2)", KindInvalid},
		{"value of file-size out of range (0..18446744073709551615)", KindInvalid},
		{"input does not match any value of type", KindInvalid},
		{"invalid value: no spaces allowed", KindInvalid},
		{"failure: already have disk with such slot", KindExists},
		{"failure: item already exists", KindExists},
		{"failure: file exists", KindExists},
		{"failure: something RouterOS never said before", KindInternal},
		{"FAILURE: NO SUCH ITEM", KindNotFound},
	}
	for _, m := range messages {
		for _, stream := range []string{"stdout", "stderr"} {
			t.Run(stream+"/"+m.text, func(t *testing.T) {
				stdout, stderr := "", ""
				if stream == "stdout" {
					stdout = m.text + "\r\n"
				} else {
					stderr = m.text + "\n"
				}
				err := Classify("disk-add", nil, stdout, stderr)
				var re *Error
				if !errors.As(err, &re) {
					t.Fatalf("Classify(%q on %s) = %v, want an *Error", m.text, stream, err)
				}
				if re.Kind != m.want {
					t.Errorf("kind = %s, want %s", re.Kind, m.want)
				}
				if re.Command != "disk-add" {
					t.Errorf("command = %q, want disk-add", re.Command)
				}
				if re.Output != m.text {
					t.Errorf("output = %q, want the trimmed message %q", re.Output, m.text)
				}
			})
		}
	}
}

func TestClassifyUsesExitStatusAlone(t *testing.T) {
	err := Classify("disk-remove", failedExit(), "", "")
	if KindOf(err) != KindInternal || err == nil {
		t.Fatalf("non-zero exit with no text = %v, want internal", err)
	}
	var exitErr *ssh.ExitError
	if !errors.As(err, &exitErr) {
		t.Errorf("error %v does not carry the exit status", err)
	}
}

func TestClassifyExitStatusWithTextUsesTheText(t *testing.T) {
	// With a failing exit the whole stdout is error text, even a message no
	// line-start rule recognises.
	err := Classify("disk-add", failedExit(), "disk slot pvc-1 not found\n", "")
	if !IsKind(err, KindNotFound) {
		t.Fatalf("got %v, want not-found", err)
	}
	err = Classify("disk-add", failedExit(), "", "oops: not enough space\n")
	if !IsKind(err, KindNoSpace) {
		t.Fatalf("got %v, want no-space", err)
	}
}

func TestClassifySuccess(t *testing.T) {
	success := []struct {
		name   string
		runErr error
		stdout string
	}{
		{"empty output", nil, ""},
		{"whitespace only", nil, "\r\n  \n"},
		{"exit status missing", &ssh.ExitMissingError{}, "name: rds1\r\n"},
		{
			// A record may hold words of the error table inside values; only
			// lines that start like a RouterOS message are error text.
			"record values that look like messages",
			nil,
			"Flags: X - disabled\r\n 0  type=file slot=\"pvc-exists\" file-path=/storage-pool/not-found.img\r\n" +
				"               comment=\"no such item\" size=1 073 741 824\r\n",
		},
	}
	for _, s := range success {
		t.Run(s.name, func(t *testing.T) {
			if err := Classify("disk-print", s.runErr, s.stdout, ""); err != nil {
				t.Fatalf("Classify = %v, want success", err)
			}
		})
	}
}

func TestClassifyFindsAMessageAfterRecords(t *testing.T) {
	err := Classify("disk-print", nil, " 0  type=file slot=\"a\"\n\nfailure: no such item\n", "")
	var re *Error
	if !errors.As(err, &re) || re.Kind != KindNotFound {
		t.Fatalf("got %v, want not-found", err)
	}
	if re.Output != "failure: no such item" {
		t.Errorf("output = %q, want only the message", re.Output)
	}
}

func TestClassifyUnrecognisedStderrIsAFailure(t *testing.T) {
	// Unknown text on stderr fails closed: a command we cannot read as a
	// success must not be taken for one.
	if err := Classify("disk-add", nil, "", "something odd\n"); !IsKind(err, KindInternal) || err == nil {
		t.Fatalf("got %v, want internal", err)
	}
}

func TestClassifyTransportFailures(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want Kind
	}{
		{"deadline", context.DeadlineExceeded, KindTimeout},
		{"wrapped deadline", fmt.Errorf("running: %w", context.DeadlineExceeded), KindTimeout},
		{"cancel", context.Canceled, KindTimeout},
		{"eof", io.EOF, KindUnavailable},
		{"unexpected eof", io.ErrUnexpectedEOF, KindUnavailable},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, KindUnavailable},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), KindUnavailable},
		{"closed", net.ErrClosed, KindUnavailable},
		{"handshake", errors.New("ssh: handshake failed: ssh: unable to authenticate"), KindUnavailable},
		{"channel refused", &ssh.OpenChannelError{Reason: ssh.ResourceShortage}, KindUnavailable},
		{"connection lost", fmt.Errorf("%w: %w", errConnLost, &ssh.ExitMissingError{}), KindUnavailable},
		{"unexplained", errors.New("ssh: command /disk print failed"), KindInternal},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Classify("identity", c.err, "", "")
			if err == nil || KindOf(err) != c.want {
				t.Fatalf("Classify(%v) = %v, want %s", c.err, err, c.want)
			}
			if !errors.Is(err, c.err) {
				t.Errorf("error %v does not wrap %v", err, c.err)
			}
		})
	}
}

func TestClassifyKeepsAnAlreadyClassifiedError(t *testing.T) {
	in := &Error{Kind: KindNoSpace, Command: "disk-add"}
	if got := Classify("disk-add", in, "", ""); !errors.Is(got, in) {
		t.Fatalf("got %v, want the same *Error back", got)
	}
}

func TestClassifyCapsOutput(t *testing.T) {
	long := "failure: " + strings.Repeat("é", maxOutputLen)
	var re *Error
	if !errors.As(Classify("disk-add", nil, long, ""), &re) {
		t.Fatal("want an *Error")
	}
	if len(re.Output) > maxOutputLen+len("…") {
		t.Errorf("output is %d bytes, want at most %d", len(re.Output), maxOutputLen+len("…"))
	}
	if !strings.HasSuffix(re.Output, "…") || !strings.HasPrefix(re.Output, "failure: ") {
		t.Errorf("output %q is not a marked cut of the message", re.Output[:40])
	}
	if !utf8.ValidString(re.Output) {
		t.Error("output was cut inside a rune")
	}
}
