package packaging

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// verifyUnits runs systemd-analyze verify on the units of dir and fails on
// any complaint: verify exits 0 on unknown keys, so its output is the
// verdict.
func verifyUnits(t *testing.T, dir string) error {
	t.Helper()
	units, err := filepath.Glob(filepath.Join(dir, "*.service"))
	if err != nil || len(units) == 0 {
		t.Fatalf("no units in %s (%v)", dir, err)
	}
	out, err := exec.Command("systemd-analyze", append([]string{"verify"}, units...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		return &verifyError{out: string(out), err: err}
	}
	return nil
}

type verifyError struct {
	out string
	err error
}

func (e *verifyError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("systemd-analyze verify: %v: %s", e.err, e.out)
	}
	return "systemd-analyze verify: " + e.out
}

// unitsForVerify copies systemd/*.service to a temporary directory with
// each ExecStart binary pointed at a file that exists here (verify checks
// that the binary is executable): the agent at the one just built, the
// registrar, which this repository does not build, at a stand-in.
func unitsForVerify(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze is not installed (apt-get install systemd; .ci/run installs it)")
	}
	bin := builtBinaries(t)
	standIn, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	paths := strings.NewReplacer(
		"ExecStart=/usr/local/bin/rds-csi-agent ", "ExecStart="+filepath.Join(bin, "rds-csi-agent")+" ",
		"ExecStart=/usr/local/bin/csi-node-driver-registrar ", "ExecStart="+standIn+" ",
	)
	src := filepath.Join(repoRoot(t), "systemd")
	units, _ := filepath.Glob(filepath.Join(src, "*.service"))
	dir := t.TempDir()
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		rewritten := paths.Replace(string(data))
		if rewritten == string(data) {
			t.Fatalf("%s: ExecStart is not /usr/local/bin/<binary>", u)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(u)), []byte(rewritten), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestTheSystemdUnitsVerify(t *testing.T) {
	if err := verifyUnits(t, unitsForVerify(t)); err != nil {
		t.Fatal(err)
	}
}

func TestSystemdVerifyFailsOnAMistypedDirective(t *testing.T) {
	dir := unitsForVerify(t)
	path := filepath.Join(dir, "rds-csi-agent.service")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data = []byte(strings.Replace(string(data), "Restart=on-failure", "Restart=on-failure\nRestartSecs=2s", 1))
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	err = verifyUnits(t, dir)
	if err == nil || !strings.Contains(err.Error(), "RestartSecs") {
		t.Fatalf("verify of a unit with RestartSecs=: %v", err)
	}
}

// The unit runs the agent in shutdown mode, and every flag it and its
// environment file pass is one the agent knows (the agent parses all its
// flags before --version prints).
func TestTheSystemdUnitPassesFlagsTheAgentKnows(t *testing.T) {
	unit := string(readFile(t, "systemd/rds-csi-agent.service"))
	env := string(readFile(t, "systemd/rds-csi-agent.env"))
	if !strings.Contains(unit, "--shutdown-ctrl-loss-tmo=${SHUTDOWN_CTRL_LOSS_TMO}") {
		t.Fatal("the unit does not wire --shutdown-ctrl-loss-tmo")
	}
	vars := map[string]string{}
	for _, line := range strings.Split(env, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			vars[k] = strings.Trim(v, `"`)
		}
	}
	if tmo := regexp.MustCompile(`^[1-9][0-9]*$`); !tmo.MatchString(vars["SHUTDOWN_CTRL_LOSS_TMO"]) {
		t.Fatalf("SHUTDOWN_CTRL_LOSS_TMO=%q: want a positive number of seconds (0 is off)", vars["SHUTDOWN_CTRL_LOSS_TMO"])
	}
	args := append([]string{"--shutdown-ctrl-loss-tmo=" + vars["SHUTDOWN_CTRL_LOSS_TMO"]}, strings.Fields(vars["RDS_CSI_AGENT_ARGS"])...)
	cmd := exec.Command(filepath.Join(builtBinaries(t), "rds-csi-agent"), append(args, "--version")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rds-csi-agent %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
