package routeros_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/test/rdssim"
)

// Every failure text the simulator prints must be classified as a failure of
// the right kind even when it arrives on stdout with exit status 0, the
// console-like default: a text the classifier does not know would otherwise
// pass as success.
func TestEverySimulatorFailureTextIsAnError(t *testing.T) {
	tests := []struct {
		text string
		want routeros.Kind
	}{
		{fmt.Sprintf(rdssim.ErrTextSyntax, 3), routeros.KindInvalid},
		{fmt.Sprintf(rdssim.ErrTextEndOfCommand, 3), routeros.KindInvalid},
		{fmt.Sprintf(rdssim.ErrTextBadCommandName, "x", 3), routeros.KindInvalid},
		{fmt.Sprintf(rdssim.ErrTextInvalidValue, "file-size"), routeros.KindInvalid},
		{fmt.Sprintf(rdssim.ErrTextMissingValue, "slot"), routeros.KindInvalid},
		{rdssim.ErrTextBadRegex, routeros.KindInvalid},
		{rdssim.ErrTextNoSuchItem, routeros.KindNotFound},
		{rdssim.ErrTextNoSpace, routeros.KindNoSpace},
		{rdssim.ErrTextSlotTooLong, routeros.KindInvalid},
		{rdssim.ErrTextSlotExists, routeros.KindExists},
		{rdssim.ErrTextFileExists, routeros.KindExists},
		{rdssim.ErrTextNQNExists, routeros.KindExists},
		{rdssim.ErrTextNQNRequired, routeros.KindInternal},
		{rdssim.ErrTextBadFilePath, routeros.KindInternal},
		{rdssim.ErrTextNotFileDisk, routeros.KindInternal},
		{rdssim.ErrTextCopySmaller, routeros.KindInternal},
		{rdssim.ErrTextCannotRemove, routeros.KindInternal},
		{fmt.Sprintf(rdssim.ErrTextExportFailed, "port busy"), routeros.KindInternal},
		{fmt.Sprintf(rdssim.ErrTextIOFailed, "input/output error"), routeros.KindInternal},
		{rdssim.ErrTextFileInUse, routeros.KindInternal},
		{rdssim.ErrTextDirNotEmpty, routeros.KindInternal},
		{rdssim.ErrTextCannotRemoveFS, routeros.KindInternal},
		{fmt.Sprintf(rdssim.ErrTextNotSimulated, "print"), routeros.KindInternal},
	}
	for _, tt := range tests {
		for _, stdout := range []string{tt.text + "\r\n", "Flags: X - disabled\r\n" + tt.text + "\r\n"} {
			err := routeros.Classify("disk-add", nil, stdout, "")
			if err == nil {
				t.Errorf("%q on stdout with exit 0 was taken as success", tt.text)
				continue
			}
			if got := routeros.KindOf(err); got != tt.want {
				t.Errorf("%q classified %s, want %s", strings.TrimSpace(tt.text), got, tt.want)
			}
		}
	}
}
