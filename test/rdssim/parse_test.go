package rdssim

import (
	"fmt"
	"testing"
)

func TestParseAcceptsTheDriversCommands(t *testing.T) {
	cases := []struct {
		line  string
		menu  string
		verb  string
		items int
	}{
		{`/disk add type=file file-path="/storage-pool/csi/x.img" file-size=1073741824 slot="x" mount-filesystem=no nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:x"`, "disk", "add", 8},
		{`/disk set [find slot="x"] file-size=2147483648`, "disk", "set", 2},
		{`/disk print detail where slot="x"`, "disk", "print", 3},
		{`/disk print detail`, "disk", "print", 1},
		{`/disk print detail where mount-point="storage-pool"`, "disk", "print", 3},
		{`/disk remove [find slot="x"]`, "disk", "remove", 1},
		{`/file print detail where name~"x"`, "file", "print", 3},
		{`/file remove [find name="storage-pool/csi/x.img"]`, "file", "remove", 1},
		{`/system identity print`, "system identity", "print", 0},
		{`/disk add type=file copy-from=[find slot="x"] file-path="/storage-pool/y.img" slot="y"`, "disk", "add", 4},
		{`/disk monitor-traffic x once`, "disk", "monitor-traffic", 2},
	}
	for _, tc := range cases {
		cmd, err := parse(tc.line)
		if err != nil {
			t.Errorf("%s: %s", tc.line, err)
			continue
		}
		if cmd.menu != tc.menu || cmd.verb != tc.verb || len(cmd.items) != tc.items {
			t.Errorf("%s: got %s %s with %d items, want %s %s with %d", tc.line, cmd.menu, cmd.verb, len(cmd.items), tc.menu, tc.verb, tc.items)
		}
	}
}

func TestParseUnescapesQuotedStrings(t *testing.T) {
	cmd, err := parse(`/disk set [find slot="a\"b\\c\$d\?e\_f"]`)
	if err != nil {
		t.Fatal(err)
	}
	if got := cmd.items[0].find[0].value; got != `a"b\c$d?e f` {
		t.Errorf("value = %q", got)
	}
}

func TestParseRefusesWhatItDoesNotUnderstand(t *testing.T) {
	cases := []struct {
		name, line, want string
	}{
		{"unknown menu", `/dsk print`, fmt.Sprintf(ErrTextBadCommandName, "dsk", 2)},
		{"unknown command", `/disk frobnicate`, fmt.Sprintf(ErrTextBadCommandName, "frobnicate", 7)},
		{"unknown submenu command", `/system identity set name=x`, fmt.Sprintf(ErrTextBadCommandName, "set", 18)},
		{"relative menu path", `disk print`, fmt.Sprintf(ErrTextBadCommandName, "disk", 1)},
		{"slash-joined path", `/disk/print detail`, fmt.Sprintf(ErrTextBadCommandName, "disk/print", 2)},
		{"command separator", `/disk print detail; /file print`, fmt.Sprintf(ErrTextSyntax, 19)},
		{"variable in a word", `/disk print detail where slot=$x`, fmt.Sprintf(ErrTextSyntax, 31)},
		{"unescaped variable in a string", `/disk print detail where slot="a$x"`, fmt.Sprintf(ErrTextSyntax, 33)},
		{"unescaped question mark in a string", `/disk print detail where slot="a?"`, fmt.Sprintf(ErrTextSyntax, 33)},
		{"unknown escape", `/disk print detail where slot="a\n"`, fmt.Sprintf(ErrTextSyntax, 33)},
		{"unterminated string", `/disk print detail where slot="abc`, fmt.Sprintf(ErrTextSyntax, 31)},
		{"string glued to a word", `/disk print detail where slot="a"b`, fmt.Sprintf(ErrTextSyntax, 34)},
		{"newline ends nothing: refused", "/disk print detail\n/file print detail", fmt.Sprintf(ErrTextSyntax, 19)},
		{"control byte in a string", "/disk print detail where slot=\"a\tb\"", fmt.Sprintf(ErrTextSyntax, 33)},
		{"unclosed find", `/disk remove [find slot="x"`, fmt.Sprintf(ErrTextSyntax, 14)},
		{"another command inside brackets", `/disk remove [/file remove]`, fmt.Sprintf(ErrTextNotSimulated, "[/file ...]")},
		{"not a find inside brackets", `/disk remove [print]`, fmt.Sprintf(ErrTextNotSimulated, "[print ...]")},
		{"empty command", ``, fmt.Sprintf(ErrTextNotSimulated, "empty command")},
		{"menu alone", `/disk`, fmt.Sprintf(ErrTextNotSimulated, "a menu without a command")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(tc.line)
			if err == nil || err.text != tc.want {
				t.Errorf("parse(%q) = %v, want %q", tc.line, err, tc.want)
			}
		})
	}
}

func TestParseLoginReadsConsoleOptions(t *testing.T) {
	cases := []struct {
		login     string
		user      string
		width     int
		wantError bool
	}{
		{"admin", "admin", 80, false},
		{"admin+ct4096w", "admin", 4096, false},
		{"csi+cte120w25h", "csi", 120, false},
		{"admin+", "admin", 80, false},
		{"admin+x", "", 0, true},
		{"admin+4096", "", 0, true},
		{"admin+0w", "", 0, true},
		{"admin+99999999999999999999w", "", 0, true},
	}
	for _, tc := range cases {
		o, err := parseLogin(tc.login)
		if (err != nil) != tc.wantError {
			t.Errorf("parseLogin(%q) error = %v, want error %v", tc.login, err, tc.wantError)
			continue
		}
		if err == nil && (o.user != tc.user || o.width != tc.width) {
			t.Errorf("parseLogin(%q) = %+v, want user %q width %d", tc.login, o, tc.user, tc.width)
		}
	}
}
