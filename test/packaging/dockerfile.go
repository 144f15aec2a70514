// Package packaging checks what an operator installs against the code it
// packages: the Dockerfile (what it copies, the tools it ships), the
// binaries (static), the Kubernetes manifests and the Helm chart (strictly
// decoded), the systemd unit, and the reference docs (every flag and metric
// documented). No container engine runs here, so the image is checked
// through the Dockerfile's text and what its build command produces.
package packaging

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Dockerfile is the part of a Dockerfile these checks read.
type Dockerfile struct {
	// Args are the ARG defaults of every stage, by name (later wins).
	Args map[string]string
	// Copies are the COPY instructions in order.
	Copies []Copy
	// Runs are the RUN instructions of each stage, by stage name.
	Runs map[string][]string
}

// Copy is one COPY instruction.
type Copy struct {
	Stage   string // the stage the COPY is in
	From    string // --from, empty for the build context
	Sources []string
	Dest    string
}

// ParseDockerfile reads instructions, joining continuation lines. It knows
// FROM (for stage names), ARG, COPY and RUN; other instructions are kept out.
func ParseDockerfile(data []byte) (*Dockerfile, error) {
	d := &Dockerfile{Args: map[string]string{}, Runs: map[string][]string{}}
	stage := ""
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	var cur strings.Builder
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(s)
			cur.WriteByte(' ')
			continue
		}
		cur.WriteString(trimmed)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		return nil, errors.New("Dockerfile ends inside a continued line")
	}
	for _, line := range lines {
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			f := strings.Fields(rest)
			stage = ""
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stage = f[2]
			}
		case "ARG":
			name, value, _ := strings.Cut(rest, "=")
			d.Args[name] = strings.Trim(value, `"`)
		case "RUN":
			d.Runs[stage] = append(d.Runs[stage], rest)
		case "COPY":
			c := Copy{Stage: stage}
			var paths []string
			for _, f := range strings.Fields(rest) {
				if v, ok := strings.CutPrefix(f, "--from="); ok {
					c.From = v
				} else if strings.HasPrefix(f, "--") {
					continue // --chown, --chmod, --link
				} else {
					paths = append(paths, f)
				}
			}
			if len(paths) < 2 {
				return nil, fmt.Errorf("COPY %s: want sources and a destination", rest)
			}
			c.Sources, c.Dest = paths[:len(paths)-1], paths[len(paths)-1]
			d.Copies = append(d.Copies, c)
		}
	}
	return d, sc.Err()
}

// toolPackages says which Debian package ships each tool the agent may run.
// A tool added to kernel/command.Allowed must be added here too, with its
// package, and to the Dockerfile's TOOLS and TOOL_PACKAGES.
var toolPackages = map[string]string{
	"blkid":      "util-linux",
	"mkfs.ext4":  "e2fsprogs",
	"resize2fs":  "e2fsprogs",
	"mkfs.xfs":   "xfsprogs",
	"xfs_growfs": "xfsprogs",
}

// CheckTools compares the Dockerfile's TOOLS and TOOL_PACKAGES with the
// tools the code runs (allowed): the same tools, and exactly their packages.
func CheckTools(d *Dockerfile, allowed []string) error {
	var errs []error
	tools := strings.Fields(d.Args["TOOLS"])
	want := slices.Sorted(slices.Values(allowed))
	got := slices.Sorted(slices.Values(tools))
	if !slices.Equal(got, want) {
		errs = append(errs, fmt.Errorf("Dockerfile ARG TOOLS = %q, but the code runs %q (kernel/command.Allowed)", got, want))
	}
	var wantPkgs []string
	for _, t := range want {
		p, ok := toolPackages[t]
		if !ok {
			errs = append(errs, fmt.Errorf("no Debian package known for tool %q: add it to toolPackages in test/packaging", t))
			continue
		}
		if !slices.Contains(wantPkgs, p) {
			wantPkgs = append(wantPkgs, p)
		}
	}
	slices.Sort(wantPkgs)
	gotPkgs := slices.Sorted(slices.Values(strings.Fields(d.Args["TOOL_PACKAGES"])))
	if !slices.Equal(gotPkgs, wantPkgs) {
		errs = append(errs, fmt.Errorf("Dockerfile ARG TOOL_PACKAGES = %q, want exactly the packages of the tools: %q", gotPkgs, wantPkgs))
	}
	return errors.Join(errs...)
}

// CheckStatic returns an error unless the ELF file is statically linked: no
// program interpreter (PT_INTERP) and no shared libraries (DT_NEEDED).
func CheckStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s has a program interpreter (dynamically linked)", path)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%s: reading DT_NEEDED: %w", path, err)
	}
	if len(libs) > 0 {
		return fmt.Errorf("%s needs shared libraries %q", path, libs)
	}
	return nil
}
