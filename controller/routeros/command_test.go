package routeros

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode"
)

func TestCommandsRenderExactly(t *testing.T) {
	spec := DiskSpec{Slot: "pvc-a1", FilePath: "/storage-pool/csi/pvc-a1.img", Size: 1610612736, NQN: "nqn.2000-02.com.mikrotik:pvc-a1", Port: 4420}
	must := func(c Command, err error) Command {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		cmd  Command
		kind string
		want string
	}{
		{must(DiskAdd(spec)), "disk-add", `/disk add type=file file-path="/storage-pool/csi/pvc-a1.img" file-size=1610612736 slot="pvc-a1" mount-filesystem=no nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-a1"`},
		{must(DiskSetSize("pvc-a1", 2147483648)), "disk-set-size", `/disk set [find slot="pvc-a1"] file-size=2147483648`},
		{must(DiskSetAllowedHosts("pvc-a1", []string{"nqn.2026-11.dev.csi.rds:node:a", "nqn.2026-11.dev.csi.rds:node:b"})), "disk-set-allowed-hosts", `/disk set [find slot="pvc-a1"] nvme-tcp-server-allow-host-name="nqn.2026-11.dev.csi.rds:node:a,nqn.2026-11.dev.csi.rds:node:b"`},
		{must(DiskPrint("pvc-a1")), "disk-print", `/disk print detail where slot="pvc-a1"`},
		{DiskList(), "disk-list", `/disk print detail`},
		{must(DiskRemove("pvc-a1")), "disk-remove", `/disk remove [find slot="pvc-a1"]`},
		{must(FileList("pvc.a1")), "file-list", `/file print detail where name~"pvc\\.a1"`},
		{must(FileRemove("/storage-pool/csi/pvc-a1.img")), "file-remove", `/file remove [find name="storage-pool/csi/pvc-a1.img"]`},
		{must(PoolPrint("storage-pool")), "pool-print", `/disk print detail where mount-point="storage-pool"`},
		{Identity(), "identity", `/system identity print`},
	}
	for _, tt := range tests {
		if tt.cmd.String() != tt.want || tt.cmd.Kind() != tt.kind {
			t.Errorf("got %s %q\nwant %s %q", tt.cmd.Kind(), tt.cmd.String(), tt.kind, tt.want)
		}
	}
}

// Values an attacker controls (a PVC name becomes a slot; StorageClass
// parameters become paths) that try to end the command, add arguments, open a
// sub-command or substitute a variable.
var hostile = []string{
	`a" ; /system reboot ; "`,
	`a"; /disk remove [find]`,
	"a\n/system reboot",
	"a\r\n/system reboot",
	`a] ; /disk remove [find`,
	`a slot=other`,
	`a nvme-tcp-export=no`,
	`$(reboot)`,
	`$x`,
	`a\" b`,
	`a\`,
	`[/system reboot]`,
	`a;b`,
	"a\tb",
	"a\x00b",
	"ünïcode",
	`a?`,
	`..`,
	`-flag`,
	``,
}

func TestBuildersRefuseHostileValues(t *testing.T) {
	good := DiskSpec{Slot: "pvc-a", FilePath: "/storage-pool/csi/pvc-a.img", Size: 4096, NQN: "nqn.2000-02.com.mikrotik:pvc-a", Port: 4420}
	for _, v := range hostile {
		builds := map[string]func() (Command, error){
			"add slot":   func() (Command, error) { s := good; s.Slot = v; return DiskAdd(s) },
			"add path":   func() (Command, error) { s := good; s.FilePath = "/storage-pool/" + v; return DiskAdd(s) },
			"add nqn":    func() (Command, error) { s := good; s.NQN = "nqn.2000-02.com.mikrotik:" + v; return DiskAdd(s) },
			"set":        func() (Command, error) { return DiskSetSize(v, 4096) },
			"allow slot": func() (Command, error) { return DiskSetAllowedHosts(v, []string{"nqn.2026-11.dev.csi.rds:node:a"}) },
			"allow host": func() (Command, error) {
				return DiskSetAllowedHosts("pvc-a", []string{"nqn.2026-11.dev.csi.rds:node:a", "nqn.2026-11.dev.csi.rds:" + v})
			},
			"print":       func() (Command, error) { return DiskPrint(v) },
			"remove":      func() (Command, error) { return DiskRemove(v) },
			"file list":   func() (Command, error) { return FileList(v) },
			"file remove": func() (Command, error) { return FileRemove("/storage-pool/" + v) },
			"pool":        func() (Command, error) { return PoolPrint(v) },
		}
		for name, build := range builds {
			cmd, err := build()
			if err == nil {
				t.Errorf("%s accepted %q: %s", name, v, cmd)
				continue
			}
			if !IsKind(err, KindInvalid) {
				t.Errorf("%s(%q): error %v is not KindInvalid", name, v, err)
			}
		}
	}
}

func TestBuildersRefuseOutOfRangeNumbers(t *testing.T) {
	good := DiskSpec{Slot: "pvc-a", FilePath: "/storage-pool/csi/pvc-a.img", Size: 4096, NQN: "nqn.2000-02.com.mikrotik:pvc-a", Port: 4420}
	for _, s := range []DiskSpec{
		func() DiskSpec { s := good; s.Size = 0; return s }(),
		func() DiskSpec { s := good; s.Size = -1; return s }(),
		func() DiskSpec { s := good; s.Size = MaxSize + 1; return s }(),
		func() DiskSpec { s := good; s.Port = 0; return s }(),
		func() DiskSpec { s := good; s.Port = 65536; return s }(),
		func() DiskSpec { s := good; s.Slot = strings.Repeat("a", MaxNewSlotLen+1); return s }(),
	} {
		if _, err := DiskAdd(s); !IsKind(err, KindInvalid) {
			t.Errorf("DiskAdd(%+v) = %v, want KindInvalid", s, err)
		}
	}
	// An existing slot of the earlier driver (40 characters) stays addressable.
	if _, err := DiskRemove("pvc-1b4e28ba-2fa1-11d2-883f-0016d3cca427"); err != nil {
		t.Errorf("40-character legacy slot refused: %v", err)
	}
}

// parsed is a command line as the RouterOS console would split it, for the
// subset we emit: a path of words, then name=value arguments, a [find ...]
// group, or a where clause.
type parsed struct {
	words []string          // bare words: "/disk", "add", "detail", "where"
	args  map[string]string // name -> unescaped value
	finds []parsed
}

// lexCommand splits line like the console: it fails on anything that would
// start a second command, a sub-command outside [find], or substitution.
func lexCommand(line string) (parsed, error) {
	p := parsed{args: map[string]string{}}
	i := 0
	for i < len(line) {
		switch c := line[i]; c {
		case ' ':
			i++
		case ';', '\n', '\r', '$', '{', '}':
			return p, fmt.Errorf("unquoted %q at %d", c, i)
		case '[':
			depth, j := 0, i
			for ; j < len(line); j++ {
				if line[j] == '"' {
					_, n, err := unquote(line[j:])
					if err != nil {
						return p, err
					}
					j += n - 1
					continue
				}
				if line[j] == '[' {
					depth++
				}
				if line[j] == ']' {
					depth--
					if depth == 0 {
						break
					}
				}
			}
			if depth != 0 {
				return p, errors.New("unbalanced [")
			}
			inner := strings.TrimSpace(line[i+1 : j])
			if !strings.HasPrefix(inner, "find ") {
				return p, fmt.Errorf("sub-command %q is not a find", inner)
			}
			f, err := lexCommand(strings.TrimPrefix(inner, "find "))
			if err != nil {
				return p, err
			}
			p.finds = append(p.finds, f)
			i = j + 1
		default:
			j := i
			for j < len(line) && line[j] != ' ' && line[j] != '=' && line[j] != '~' && line[j] != '"' && line[j] != '[' && line[j] != ';' {
				j++
			}
			word := line[i:j]
			if j < len(line) && (line[j] == '=' || line[j] == '~') {
				j++
				var val string
				if j < len(line) && line[j] == '"' {
					v, n, err := unquote(line[j:])
					if err != nil {
						return p, err
					}
					val, j = v, j+n
				} else if j < len(line) && line[j] == '[' {
					val = "[group]"
					k := strings.IndexByte(line[j:], ']')
					if k < 0 {
						return p, errors.New("unbalanced [ in value")
					}
					f, err := lexCommand(strings.TrimPrefix(line[j+1:j+k], "find "))
					if err != nil {
						return p, err
					}
					p.finds = append(p.finds, f)
					j += k + 1
				} else {
					k := j
					for k < len(line) && line[k] != ' ' {
						if strings.ContainsRune(`";$[]{}`, rune(line[k])) || line[k] == '\n' || line[k] == '\r' {
							return p, fmt.Errorf("special %q in unquoted value", line[k])
						}
						k++
					}
					val, j = line[j:k], k
				}
				if _, dup := p.args[word]; dup {
					return p, fmt.Errorf("argument %s given twice", word)
				}
				p.args[word] = val
			} else {
				if word == "" {
					return p, fmt.Errorf("unexpected %q at %d", line[j], j)
				}
				p.words = append(p.words, word)
			}
			i = j
		}
	}
	return p, nil
}

// unquote reads a RouterOS string literal at the start of s and returns its
// value and the bytes consumed.
func unquote(s string) (string, int, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '"':
			return b.String(), i + 1, nil
		case '$':
			return "", 0, errors.New("unescaped $ in string: variable substitution")
		case '\\':
			if i+1 >= len(s) || !strings.ContainsRune(`"\$?`, rune(s[i+1])) {
				return "", 0, errors.New("unknown escape")
			}
			i++
			b.WriteByte(s[i])
		default:
			b.WriteByte(s[i])
		}
	}
	return "", 0, errors.New("unterminated string")
}

func TestQuoteSurvivesTheConsoleLexer(t *testing.T) {
	for _, v := range append(hostile, `plain`, `with space`, `"`, `\\`, `$$`, `?`) {
		if strings.ContainsFunc(v, unicode.IsControl) {
			continue // control characters never pass validation
		}
		p, err := lexCommand("/x y name=" + quote(v))
		if err != nil {
			t.Errorf("quote(%q) = %s does not lex: %v", v, quote(v), err)
			continue
		}
		if p.args["name"] != v || len(p.args) != 1 || len(p.finds) != 0 {
			t.Errorf("quote(%q) lexed to %+v", v, p)
		}
	}
}

// checkShape asserts that a built command lexes to exactly the expected
// words and argument names, with every value equal to what was given.
func checkShape(t *testing.T, cmd Command, words []string, args map[string]string, find map[string]string) {
	t.Helper()
	p, err := lexCommand(cmd.String())
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	if strings.Join(p.words, " ") != strings.Join(words, " ") {
		t.Fatalf("%s: words %q, want %q", cmd, p.words, words)
	}
	if fmt.Sprint(p.args) != fmt.Sprint(args) {
		t.Fatalf("%s: args %v, want %v", cmd, p.args, args)
	}
	if find == nil {
		if len(p.finds) != 0 {
			t.Fatalf("%s: unexpected find %v", cmd, p.finds)
		}
		return
	}
	if len(p.finds) != 1 || fmt.Sprint(p.finds[0].args) != fmt.Sprint(find) || len(p.finds[0].words) != 0 {
		t.Fatalf("%s: find %+v, want %v", cmd, p.finds, find)
	}
}

// FuzzCommandsCannotBeInjected builds every command from arbitrary values.
// A builder must either refuse the value or produce a command that the
// console splits into exactly the intended path and arguments, carrying the
// value unchanged.
func FuzzCommandsCannotBeInjected(f *testing.F) {
	for _, v := range hostile {
		f.Add(v, int64(4096), 4420)
	}
	f.Add("pvc-ok", int64(1)<<40, 1)
	f.Fuzz(func(t *testing.T, v string, size int64, port int) {
		spec := DiskSpec{Slot: v, FilePath: "/storage-pool/" + v + ".img", Size: size, NQN: "nqn.2000-02.com.mikrotik:" + v, Port: port}
		if cmd, err := DiskAdd(spec); err == nil {
			checkShape(t, cmd, []string{"/disk", "add"}, map[string]string{
				"type": "file", "file-path": spec.FilePath, "file-size": fmt.Sprint(size), "slot": v, "mount-filesystem": "no",
				"nvme-tcp-export": "yes", "nvme-tcp-server-port": fmt.Sprint(port), "nvme-tcp-server-nqn": spec.NQN,
			}, nil)
		}
		if cmd, err := DiskSetSize(v, size); err == nil {
			checkShape(t, cmd, []string{"/disk", "set"}, map[string]string{"file-size": fmt.Sprint(size)}, map[string]string{"slot": v})
		}
		if cmd, err := DiskPrint(v); err == nil {
			checkShape(t, cmd, []string{"/disk", "print", "detail", "where"}, map[string]string{"slot": v}, nil)
		}
		if cmd, err := DiskRemove(v); err == nil {
			checkShape(t, cmd, []string{"/disk", "remove"}, map[string]string{}, map[string]string{"slot": v})
		}
		if cmd, err := FileList(v); err == nil {
			checkShape(t, cmd, []string{"/file", "print", "detail", "where"}, map[string]string{"name": regexLiteral(v)}, nil)
		}
		if cmd, err := FileRemove("/" + v); err == nil {
			checkShape(t, cmd, []string{"/file", "remove"}, map[string]string{}, map[string]string{"name": v})
		}
		if cmd, err := PoolPrint(v); err == nil {
			checkShape(t, cmd, []string{"/disk", "print", "detail", "where"}, map[string]string{"mount-point": v}, nil)
		}
	})
}

// A host list can neither be empty (RouterOS is reported to admit every host
// then) nor smuggle a second host or argument inside one NQN.
func TestAllowedHostsRefuseEmptyAndSmuggledLists(t *testing.T) {
	for _, hosts := range [][]string{
		nil,
		{},
		{""},
		{"nqn.2026-11.dev.csi.rds:node:a,nqn.2026-11.dev.csi.rds:node:b"},
		{`nqn.2026-11.dev.csi.rds:node:a" nvme-tcp-export="no`},
		{"nqn.2026-11.dev.csi.rds:node:a", "not-an-nqn"},
		strings.Split(strings.Repeat("nqn.2026-11.dev.csi.rds:node:a,", maxAllowedHosts+1), ",")[:maxAllowedHosts+1],
	} {
		if cmd, err := DiskSetAllowedHosts("pvc-a", hosts); !IsKind(err, KindInvalid) {
			t.Errorf("DiskSetAllowedHosts(%q) = %q, %v; want KindInvalid", hosts, cmd, err)
		}
	}
}

func TestSplitAllowedHostsDropsEmptyEntries(t *testing.T) {
	tests := map[string][]string{
		"":        nil,
		"a":       {"a"},
		"a,b":     {"a", "b"},
		" a , ,b": {"a", "b"},
	}
	for in, want := range tests {
		if got := SplitAllowedHosts(in); !slices.Equal(got, want) {
			t.Errorf("SplitAllowedHosts(%q) = %q, want %q", in, got, want)
		}
	}
}
