package packaging

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// commandPkg is the one package allowed to start processes.
const commandPkg = "github.com/rds-csi/rds-csi/kernel/command"

// ExecReport is what ScanExec finds in a set of packages.
type ExecReport struct {
	// Forbidden are positions that start a process other than through
	// kernel/command (os/exec, os.StartProcess, syscall.Exec/ForkExec).
	Forbidden []string
	// Tools are the tool names passed to command.Run (directly or through a
	// variable holding it): exact names, or "prefix*" for a constant prefix
	// joined to a variable ("mkfs."+fsType).
	Tools []string
	// Unresolved are command.Run calls whose tool name is not a constant.
	Unresolved []string
}

// Package is one package's import path and directory.
type Package struct {
	ImportPath, Dir string
	GoFiles         []string
}

// ScanExec parses the packages' non-test Go files and reports every way
// they start a process.
func ScanExec(pkgs []Package) (ExecReport, error) {
	var r ExecReport
	fset := token.NewFileSet()
	for _, p := range pkgs {
		for _, name := range p.GoFiles {
			path := filepath.Join(p.Dir, name)
			src, err := os.ReadFile(path)
			if err != nil {
				return r, err
			}
			f, err := parser.ParseFile(fset, path, src, 0)
			if err != nil {
				return r, err
			}
			scanFile(fset, f, p.ImportPath == commandPkg, &r)
		}
	}
	slices.Sort(r.Tools)
	r.Tools = slices.Compact(r.Tools)
	return r, nil
}

func scanFile(fset *token.FileSet, f *ast.File, isCommand bool, r *ExecReport) {
	// Local names of the imports that matter.
	names := map[string]string{} // local name -> import path
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		local := filepath.Base(path)
		if imp.Name != nil {
			local = imp.Name.Name
		}
		names[local] = path
		if path == "os/exec" && !isCommand {
			r.Forbidden = append(r.Forbidden, fmt.Sprintf("%s: imports os/exec", fset.Position(imp.Pos())))
		}
	}
	// Package-level variables that hold command.Run (var runTool = command.Run).
	runVars := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, v := range vs.Values {
			if isSel(v, names, commandPkg, "Run") && i < len(vs.Names) {
				runVars[vs.Names[i].Name] = true
			}
		}
		return true
	})
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		pos := fset.Position(call.Pos()).String()
		switch {
		case isSel(call.Fun, names, "os", "StartProcess"),
			isSel(call.Fun, names, "syscall", "Exec"), isSel(call.Fun, names, "syscall", "ForkExec"),
			isSel(call.Fun, names, "golang.org/x/sys/unix", "Exec"):
			r.Forbidden = append(r.Forbidden, pos+": starts a process directly")
		case isSel(call.Fun, names, commandPkg, "Run") || isIdent(call.Fun, runVars):
			if len(call.Args) < 3 {
				r.Unresolved = append(r.Unresolved, pos)
				return true
			}
			if tool, ok := toolName(call.Args[2]); ok {
				r.Tools = append(r.Tools, tool)
			} else {
				r.Unresolved = append(r.Unresolved, pos)
			}
		}
		return true
	})
}

func isSel(e ast.Expr, names map[string]string, pkg, name string) bool {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != name {
		return false
	}
	id, ok := sel.X.(*ast.Ident)
	return ok && names[id.Name] == pkg
}

func isIdent(e ast.Expr, set map[string]bool) bool {
	id, ok := e.(*ast.Ident)
	return ok && set[id.Name]
}

// toolName resolves a string literal, or a literal prefix joined to a
// variable ("mkfs."+fsType → "mkfs.*").
func toolName(e ast.Expr) (string, bool) {
	switch v := e.(type) {
	case *ast.BasicLit:
		if v.Kind == token.STRING {
			s, err := strconv.Unquote(v.Value)
			return s, err == nil
		}
	case *ast.BinaryExpr:
		if v.Op == token.ADD {
			if prefix, ok := toolName(v.X); ok && !strings.HasSuffix(prefix, "*") {
				return prefix + "*", true
			}
		}
	}
	return "", false
}

// CheckExec compares what ScanExec found with the allowed tools: nothing
// starts a process outside kernel/command, every call names its tool, every
// tool named is allowed, and every allowed tool is used by some call (so the
// image ships nothing the code does not run).
func CheckExec(r ExecReport, allowed []string) error {
	var problems []string
	for _, f := range r.Forbidden {
		problems = append(problems, f+" (only kernel/command may start processes)")
	}
	for _, u := range r.Unresolved {
		problems = append(problems, u+": command.Run with a tool name that is not a constant")
	}
	used := map[string]bool{}
	for _, t := range r.Tools {
		matched := false
		for _, a := range allowed {
			if a == t || (strings.HasSuffix(t, "*") && strings.HasPrefix(a, strings.TrimSuffix(t, "*"))) {
				used[a], matched = true, true
			}
		}
		if !matched {
			problems = append(problems, fmt.Sprintf("the code runs %q, which kernel/command.Allowed does not list", t))
		}
	}
	for _, a := range allowed {
		if !used[a] {
			problems = append(problems, fmt.Sprintf("kernel/command.Allowed lists %q, but no call runs it", a))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "\n"))
	}
	return nil
}
