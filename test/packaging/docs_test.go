package packaging

import (
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/controller"
	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/kube/events"
	"github.com/rds-csi/rds-csi/rpc"
)

// docTables maps each "## " or "### " heading of a markdown file to the
// rows of the tables under it: first cell → second cell. Cells holding a
// list of code spans are split into one row per span.
func docTables(t *testing.T, rel string) map[string]map[string]string {
	t.Helper()
	sections := map[string]map[string]string{}
	heading := ""
	for line := range strings.Lines(string(readFile(t, rel))) {
		line = strings.TrimSpace(line)
		if h, ok := strings.CutPrefix(line, "## "); ok {
			heading = h
			continue
		}
		if h, ok := strings.CutPrefix(line, "### "); ok {
			heading = h
			continue
		}
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 2 {
			continue
		}
		if sections[heading] == nil {
			sections[heading] = map[string]string{}
		}
		for _, key := range codeSpans(cells[0]) {
			sections[heading][key] = strings.TrimSpace(cells[1])
		}
	}
	return sections
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

func codeSpans(cell string) []string {
	var out []string
	for _, m := range codeSpan.FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

type flagInfo struct {
	name, typ, def string // def is "" for the zero value
}

// binaryFlags parses a binary's -h output.
func binaryFlags(t *testing.T, args ...string) []flagInfo {
	t.Helper()
	out, _ := exec.Command(args[0], append(args[1:], "-h")...).CombinedOutput() // -h exits 0 or 2
	var flags []flagInfo
	def := regexp.MustCompile(`\(default (.*)\)$`)
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "  -"):
			f := strings.Fields(line)
			fi := flagInfo{name: strings.TrimPrefix(f[0], "-"), typ: "bool"}
			if len(f) > 1 {
				fi.typ = f[1]
			}
			flags = append(flags, fi)
		case strings.HasPrefix(line, "    \t") && len(flags) > 0:
			if m := def.FindStringSubmatch(line); m != nil {
				v := m[1]
				if u, err := strconv.Unquote(v); err == nil {
					v = u
				}
				flags[len(flags)-1].def = v
			}
		}
	}
	if len(flags) == 0 {
		t.Fatalf("%v -h printed no flags:\n%s", args, out)
	}
	return flags
}

func klogFlags() map[string]bool {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	names := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { names[f.Name] = true })
	return names
}

// checkDefault compares a documented default with the flag's. A cell that
// is a single code span must equal the default (durations by value); any
// other cell (prose, "(required)", empty) is allowed only for a flag whose
// default is its zero value, the prose then explaining a computed default.
func checkDefault(f flagInfo, cell string) error {
	spans := codeSpans(cell)
	if len(spans) == 1 && strings.TrimSpace(cell) == "`"+spans[0]+"`" {
		doc, real := spans[0], f.def
		if real == "" {
			real = map[string]string{"bool": "false", "int": "0", "uint": "0", "duration": "0s"}[f.typ]
		}
		if f.typ == "duration" {
			d1, err1 := time.ParseDuration(doc)
			d2, err2 := time.ParseDuration(real)
			if err1 == nil && err2 == nil && d1 == d2 {
				return nil
			}
		}
		if doc != real {
			return fmt.Errorf("--%s: documented default %q, the binary's is %q", f.name, doc, real)
		}
		return nil
	}
	if f.def != "" {
		return fmt.Errorf("--%s: documented default %q, the binary's is %q", f.name, cell, f.def)
	}
	return nil
}

func TestEveryFlagIsDocumentedWithItsDefault(t *testing.T) {
	bin := builtBinaries(t)
	docs := docTables(t, "docs/configuration.md")
	klogNames := klogFlags()
	t.Setenv("NODE_NAME", "") // the agent's --node-id default
	for _, tc := range []struct {
		section string
		args    []string
	}{
		{"Controller flags (`rds-csi-controller`)", []string{filepath.Join(bin, "rds-csi-controller")}},
		{"Agent flags (`rds-csi-agent`)", []string{filepath.Join(bin, "rds-csi-agent")}},
		{"`rds-csi-agent status`", []string{filepath.Join(bin, "rds-csi-agent"), "status"}},
	} {
		t.Run(strings.Join(tc.args[1:], " ")+filepath.Base(tc.args[0]), func(t *testing.T) {
			own, logging := docs[tc.section], docs["Logging flags (both binaries)"]
			if own == nil || logging == nil {
				t.Fatalf("docs/configuration.md has no table under %q or the logging flags", tc.section)
			}
			seen := map[string]bool{}
			for _, f := range binaryFlags(t, tc.args...) {
				table, key := own, "--"+f.name
				if klogNames[f.name] {
					table = logging
					if f.name == "v" {
						key = "-v"
					}
				}
				cell, ok := table[key]
				if !ok {
					t.Errorf("%s is not documented in docs/configuration.md", key)
					continue
				}
				seen[key] = true
				if err := checkDefault(f, cell); err != nil {
					t.Error(err)
				}
			}
			for key := range own {
				if !seen[key] {
					t.Errorf("docs/configuration.md documents %s, which the binary does not have", key)
				}
			}
		})
	}
}

func TestTheDefaultCheckCatchesADriftedDefault(t *testing.T) {
	for _, tc := range []struct {
		f    flagInfo
		cell string
	}{
		{flagInfo{name: "a", typ: "duration", def: "1m0s"}, "`30s`"},
		{flagInfo{name: "b", typ: "string", def: ":9810"}, "`:9809`"},
		{flagInfo{name: "c", typ: "int", def: "8"}, "(required)"},
		{flagInfo{name: "d", typ: "bool"}, "`true`"},
	} {
		if err := checkDefault(tc.f, tc.cell); err == nil {
			t.Errorf("default %q of %+v accepted", tc.cell, tc.f)
		}
	}
	if err := checkDefault(flagInfo{name: "e", typ: "duration", def: "1m0s"}, "`60s`"); err != nil {
		t.Error(err)
	}
}

// storageClassParameters reads the parameter names parseParams accepts:
// the case labels of its switch, resolved through the string constants of
// the controller and volume packages.
func storageClassParameters(t *testing.T) []string {
	t.Helper()
	consts := map[string]string{}
	var sw *ast.SwitchStmt
	fset := token.NewFileSet()
	for _, pkg := range []struct{ dir, qual string }{{"controller", ""}, {"volume", "volume."}} {
		files, _ := filepath.Glob(filepath.Join(repoRoot(t), pkg.dir, "*.go"))
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.ValueSpec:
					for i, name := range n.Names {
						if i < len(n.Values) {
							if lit, ok := n.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
								consts[pkg.qual+name.Name], _ = strconv.Unquote(lit.Value)
							}
						}
					}
				case *ast.FuncDecl:
					if n.Name.Name == "parseParams" && pkg.qual == "" {
						ast.Inspect(n.Body, func(m ast.Node) bool {
							if s, ok := m.(*ast.SwitchStmt); ok && sw == nil {
								sw = s
							}
							return true
						})
					}
				}
				return true
			})
		}
	}
	if sw == nil {
		t.Fatal("no switch in controller's parseParams")
	}
	var params []string
	for _, stmt := range sw.Body.List {
		for _, e := range stmt.(*ast.CaseClause).List {
			name := ""
			switch e := e.(type) {
			case *ast.Ident:
				name = e.Name
			case *ast.SelectorExpr:
				name = e.X.(*ast.Ident).Name + "." + e.Sel.Name
			}
			v, ok := consts[name]
			if !ok {
				t.Fatalf("parseParams case %s: not a string constant of controller or volume", name)
			}
			params = append(params, v)
		}
	}
	if len(params) < 8 {
		t.Fatalf("found only %d parameters: %q", len(params), params)
	}
	return params
}

func TestEveryStorageClassParameterIsDocumented(t *testing.T) {
	params := storageClassParameters(t)
	doc := docTables(t, "docs/configuration.md")["StorageClass parameters"]
	want := append(slices.Clone(params), "csi.storage.k8s.io/fstype")
	for _, p := range want {
		if _, ok := doc[p]; !ok {
			t.Errorf("StorageClass parameter %s is not documented in docs/configuration.md", p)
		}
	}
	for p := range doc {
		if !slices.Contains(want, p) {
			t.Errorf("docs/configuration.md documents StorageClass parameter %s, which the controller does not accept", p)
		}
	}
	// The examples use only parameters the controller accepts.
	for _, o := range all(kustomizeFiles(t)) {
		if o.GVK.Kind != "StorageClass" {
			continue
		}
		params, _, _ := unstructuredMap(o.Unstructured.Object, "parameters")
		for k := range params {
			if !slices.Contains(want, k) {
				t.Errorf("%s: parameter %s is not one the controller accepts", o.Source, k)
			}
		}
	}
}

func unstructuredMap(obj map[string]any, key string) (map[string]any, bool, error) {
	m, ok := obj[key].(map[string]any)
	return m, ok, nil
}

// helmValues flattens values.yaml into dotted paths. A map with a row of
// its own in the docs is a leaf; so are scalars and lists.
func helmValues(prefix string, v any, documented map[string]string, out map[string]any) {
	m, ok := v.(map[string]any)
	if _, doc := documented[prefix]; !ok || len(m) == 0 || doc {
		out[prefix] = v
		return
	}
	for k, child := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		helmValues(p, child, documented, out)
	}
}

func TestEveryHelmValueIsDocumentedWithItsDefault(t *testing.T) {
	var values map[string]any
	if err := yaml.Unmarshal(readFile(t, "deploy/helm/rds-csi/values.yaml"), &values); err != nil {
		t.Fatal(err)
	}
	doc := docTables(t, "docs/configuration.md")["Helm values"]
	flat := map[string]any{}
	helmValues("", values, doc, flat)
	for path, v := range flat {
		cell, ok := doc[path]
		if !ok {
			t.Errorf("Helm value %s is not documented in docs/configuration.md", path)
			continue
		}
		var want string
		switch v := v.(type) {
		case string:
			want = v
			if v == "" {
				want = `""`
			}
		case float64, bool:
			want = fmt.Sprint(v)
		case []any:
			if len(v) == 0 {
				want = "[]"
			}
		case map[string]any:
			if len(v) == 0 {
				want = "{}"
			}
		}
		if want != "" && strings.TrimSpace(cell) != "`"+want+"`" {
			t.Errorf("Helm value %s: documented default %s, values.yaml has `%s`", path, cell, want)
		}
	}
	for path := range doc {
		if _, ok := flat[path]; !ok {
			t.Errorf("docs/configuration.md documents Helm value %s, which values.yaml does not have", path)
		}
	}
}

// captureRegistry records the name and help of every metric registered on
// it, whether or not a series exists yet.
type captureRegistry map[string]string

var descFields = regexp.MustCompile(`fqName: "([^"]+)", help: "((?:[^"\\]|\\.)*)"`)

func (c captureRegistry) Register(col prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { col.Describe(ch); close(ch) }()
	for d := range ch {
		if m := descFields.FindStringSubmatch(d.String()); m != nil {
			c[m[1]] = m[2]
		}
	}
	return nil
}

func (c captureRegistry) MustRegister(cols ...prometheus.Collector) {
	for _, col := range cols {
		_ = c.Register(col)
	}
}

func (c captureRegistry) Unregister(prometheus.Collector) bool { return false }

// metricPackages are the packages whose constructors register the driver's
// metrics; driverMetrics calls each of them.
var metricPackages = []string{"agent", "agent/heal", "controller", "controller/routeros", "kube/events", "rpc"}

// driverMetrics registers every metric of both binaries on a capturing
// registry.
func driverMetrics(t *testing.T) captureRegistry {
	t.Helper()
	reg := captureRegistry{}
	agent.NewMetrics(reg)
	heal.NewMetrics(reg)
	routeros.NewMetrics(reg)
	controller.New(controller.Options{}, nil, controller.WithMetrics(reg))
	rpc.NewMetrics(reg)
	api, err := events.NewAPI(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	rec := events.NewRecorder(api, "test", "node", reg)
	rec.Shutdown()
	families, err := rpc.NewRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		reg[f.GetName()] = f.GetHelp()
	}
	return reg
}

// Only the packages in metricPackages create metrics: a metric created
// elsewhere (migration metrics in the controller, say) fails here until its
// constructor is called by driverMetrics, and so documented.
func TestEveryPackageCreatingMetricsIsCoveredByTheDocCheck(t *testing.T) {
	creates := regexp.MustCompile(`prometheus\.(New(Counter|Gauge|Histogram|Summary)(Vec|Func)?|NewDesc|MustNewConstMetric)\(`)
	for _, p := range shippedPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, "github.com/rds-csi/rds-csi"), "/")
		for _, name := range p.GoFiles {
			data, err := os.ReadFile(filepath.Join(p.Dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if creates.Match(data) && !slices.Contains(metricPackages, rel) {
				t.Errorf("%s/%s creates metrics, but driverMetrics in test/packaging does not call its constructor", rel, name)
			}
		}
	}
}

func TestEveryMetricIsDocumented(t *testing.T) {
	doc := string(readFile(t, "docs/metrics.md"))
	metrics := driverMetrics(t)
	var names []string
	for name := range metrics {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		switch {
		case strings.HasPrefix(name, "go_") && strings.Contains(doc, "`go_*`"),
			strings.HasPrefix(name, "process_") && strings.Contains(doc, "`process_*`"):
		case !strings.Contains(doc, "`"+name+"`"):
			t.Errorf("metric %s (%s) is not in docs/metrics.md", name, metrics[name])
		}
	}
	t.Logf("%d metrics checked", len(names))
	// Nothing documented that no longer exists.
	for _, m := range regexp.MustCompile("`((rds|csi)_[a-z_]+)`").FindAllStringSubmatch(doc, -1) {
		if _, ok := metrics[m[1]]; !ok {
			t.Errorf("docs/metrics.md names %s, which the driver does not register", m[1])
		}
	}
}

// eventReasons are the values of the Reason* string constants of the
// shipped packages: the reasons of the Events the driver records.
func eventReasons(t *testing.T) []string {
	t.Helper()
	var reasons []string
	fset := token.NewFileSet()
	for _, p := range shippedPackages(t) {
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(f, func(n ast.Node) bool {
				vs, ok := n.(*ast.ValueSpec)
				if !ok {
					return true
				}
				for i, id := range vs.Names {
					if strings.HasPrefix(id.Name, "Reason") && i < len(vs.Values) {
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							v, _ := strconv.Unquote(lit.Value)
							reasons = append(reasons, v)
						}
					}
				}
				return true
			})
		}
	}
	if len(reasons) < 4 {
		t.Fatalf("found only %d event reasons: %q", len(reasons), reasons)
	}
	return reasons
}

func TestEveryEventReasonIsDocumented(t *testing.T) {
	events := docTables(t, "docs/metrics.md")["Events"]
	reasons := eventReasons(t)
	for _, r := range reasons {
		if _, ok := events[r]; !ok {
			t.Errorf("Event reason %s is not in the Events table of docs/metrics.md", r)
		}
	}
	for r := range events {
		if !slices.Contains(reasons, r) {
			t.Errorf("docs/metrics.md documents Event reason %s, which no Reason constant has", r)
		}
	}
}

// The Grafana dashboard queries only metrics the driver registers. Panels
// that match metric names by regular expression (the migration metrics,
// whose names come with the migration work) are reported, not failed, while
// nothing registered matches them.
func TestTheGrafanaDashboardQueriesMetricsTheDriverHas(t *testing.T) {
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(readFile(t, "deploy/grafana/rds-csi.json"), &dash); err != nil {
		t.Fatal(err)
	}
	metrics := driverMetrics(t)
	name := regexp.MustCompile(`\b((?:rds|csi|process)_[a-z_]+)\b`)
	byRegex := regexp.MustCompile(`__name__=~"([^"]+)"`)
	var queries int
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			queries++
			for _, m := range byRegex.FindAllStringSubmatch(target.Expr, -1) {
				re := regexp.MustCompile("^(?:" + m[1] + ")$")
				matched := false
				for n := range metrics {
					matched = matched || re.MatchString(n) || re.MatchString(n+"_bucket")
				}
				if !matched {
					t.Logf("NOTE: panel %q queries %s, which no metric registered today matches (the migration metrics come with the migration work)", p.Title, m[1])
				}
			}
			expr := byRegex.ReplaceAllString(target.Expr, "")
			for _, m := range name.FindAllStringSubmatch(expr, -1) {
				base := m[1]
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if _, ok := metrics[base]; !ok {
						base = strings.TrimSuffix(base, suffix)
					}
				}
				if _, ok := metrics[base]; !ok {
					t.Errorf("panel %q queries %s, which the driver does not register", p.Title, m[1])
				}
			}
		}
	}
	if queries < 15 {
		t.Fatalf("only %d queries in the dashboard", queries)
	}
}
