package e2e_test

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The README's figures that are settings or constants are checked here
// against what the code says, so a default changed in code fails a test
// until the docs say so too:
//
//   - each table after <!-- flags: bin ... --> against the -h of those
//     binaries (every variable listed, every default as the binary shows it);
//   - the table after <!-- constants --> against the constants it names,
//     evaluated from the Go source;
//   - every "NAME (figure)" in the README and the protocol doc of
//     services/chat, where NAME is a variable or a constant of those tables;
//   - every error and close code of services/chat, which the README lists.

// repoRoot is the repository root, from services/e2e.
var repoRoot = filepath.Join("..", "..")

// documentedBinaries are the binaries whose every variable the README lists.
var documentedBinaries = []string{"gateway", "auth", "presence", "devrun", "devstack"}

// docFlag is one flag as a binary's -h shows it.
type docFlag struct {
	name, typ, env, def string // typ "" is a bool flag; def "" is none shown
}

var (
	usageFlag = regexp.MustCompile(`^  -([a-z0-9-]+)(?: ([a-z0-9]+))?$`)
	usageEnv  = regexp.MustCompile(`\(env ([A-Z0-9_]+)\)`)
	usageDef  = regexp.MustCompile(`\(default (.*)\)$`)
)

// binaryFlags runs bin -h and returns its flags that have a variable, by
// variable name.
func binaryFlags(t *testing.T, bin string) map[string]docFlag {
	t.Helper()
	// -h makes the binary print its flags and exit non-zero.
	out, _ := exec.Command(filepath.Join(binDir, bin), "-h").CombinedOutput()
	if !strings.Contains(string(out), "Usage of") {
		t.Fatalf("%s -h printed no usage:\n%s", bin, out)
	}
	flags := map[string]docFlag{}
	lines := strings.Split(string(out), "\n")
	for i := 0; i < len(lines); i++ {
		m := usageFlag.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		f := docFlag{name: m[1], typ: m[2]}
		// The usage text follows, indented, on one or more lines.
		var usage []string
		for i+1 < len(lines) && strings.HasPrefix(lines[i+1], "    ") {
			i++
			usage = append(usage, strings.TrimSpace(lines[i]))
		}
		text := strings.Join(usage, " ")
		if e := usageEnv.FindStringSubmatch(text); e != nil {
			f.env = e[1]
		}
		if d := usageDef.FindStringSubmatch(text); d != nil {
			f.def = d[1]
			if s, err := strconv.Unquote(f.def); err == nil {
				f.def = s
			}
		}
		if f.env != "" {
			flags[f.env] = f
		}
	}
	if len(flags) == 0 {
		t.Fatalf("%s -h shows no flag with a variable:\n%s", bin, out)
	}
	return flags
}

// docTable is a markdown table after a marker comment.
type docTable struct {
	marker string     // the marker's words after its keyword
	line   int        // of the marker, 1-based
	rows   [][]string // cells, trimmed; header and separator left out
}

// readmeTables returns the tables that follow "<!-- keyword ... -->" lines.
func readmeTables(t *testing.T, keyword string) []docTable {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var tables []docTable
	var cur *docTable
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "<!-- "+keyword); ok {
			tables = append(tables, docTable{marker: strings.TrimSpace(strings.TrimSuffix(rest, "-->")), line: n})
			cur = &tables[len(tables)-1]
			continue
		}
		if cur == nil {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			// The table must follow its marker at once, and ends at the
			// first line that is not a row.
			cur = nil
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if strings.HasPrefix(cells[0], "---") {
			cur.rows = [][]string{} // header done
			continue
		}
		if cur.rows != nil {
			cur.rows = append(cur.rows, cells)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if len(tb.rows) == 0 {
			t.Fatalf("README line %d: marker %q is not followed by a table", tb.line, keyword)
		}
	}
	return tables
}

var (
	backticked = regexp.MustCompile("`([^`]*)`")
	envName    = regexp.MustCompile("^[A-Z][A-Z0-9_]+$")
	parens     = regexp.MustCompile(`\([^)]*\)`)
	// A raw default followed by the same amount in a bigger unit.
	humanSize = regexp.MustCompile("^`(\\d+)` \\((\\d+) (KiB|MiB|GiB)\\)")
)

// rowDefaults reads a table row's variables and the default README gives
// each: "" where it gives none ("(none)", "(off)", "(the gateway's own
// host)": a cell starting with a parenthesis).
func rowDefaults(t *testing.T, row []string) map[string]string {
	t.Helper()
	var vars []string
	for _, m := range backticked.FindAllStringSubmatch(row[0], -1) {
		if envName.MatchString(m[1]) {
			vars = append(vars, m[1])
		}
	}
	if len(vars) == 0 || len(row) < 3 {
		t.Fatalf("README row %q names no variable", row)
	}
	cell := row[1]
	defs := make([]string, len(vars))
	switch {
	case cell == "number of CPUs":
		defs[0] = strconv.Itoa(runtime.NumCPU())
	case strings.HasPrefix(cell, "("):
		// no default
	default:
		var got []string
		for _, m := range backticked.FindAllStringSubmatch(parens.ReplaceAllString(cell, ""), -1) {
			got = append(got, m[1])
		}
		if len(got) != len(vars) {
			t.Fatalf("README row %q: %d variables, %d defaults", row[0], len(vars), len(got))
		}
		copy(defs, got)
		if m := humanSize.FindStringSubmatch(cell); m != nil {
			raw, _ := strconv.ParseFloat(m[1], 64)
			n, _ := strconv.ParseFloat(m[2], 64)
			if n*unitScale[m[3]] != raw {
				t.Errorf("README: %s default %s is not %s %s", vars[0], m[1], m[2], m[3])
			}
		}
	}
	out := map[string]string{}
	for i, v := range vars {
		out[v] = defs[i]
	}
	return out
}

// sameDefault compares a default as README writes it with the binary's.
func sameDefault(f docFlag, readme string) bool {
	if f.def == "" && readme == "" {
		return true // a zero default, which -h does not print, shown as (off)
	}
	switch f.typ {
	case "duration":
		have, err1 := time.ParseDuration(f.def)
		want, err2 := time.ParseDuration(readme)
		return err1 == nil && err2 == nil && have == want
	case "int", "float":
		have, err1 := strconv.ParseFloat(f.def, 64)
		want, err2 := strconv.ParseFloat(readme, 64)
		return err1 == nil && err2 == nil && have == want
	case "":
		return readme == "false" && f.def == "" || readme == f.def
	}
	return f.def == readme
}

// The configuration tables list every variable of every binary, each with
// the default the binary has.
func TestREADMEFlags(t *testing.T) {
	flags := map[string]map[string]docFlag{}
	for _, b := range documentedBinaries {
		flags[b] = binaryFlags(t, b)
	}
	documented := map[string]map[string]bool{}
	for _, tb := range readmeTables(t, "flags:") {
		bins := strings.Fields(tb.marker)
		for _, row := range tb.rows {
			for v, def := range rowDefaults(t, row) {
				for _, b := range bins {
					fs, ok := flags[b]
					if !ok {
						t.Fatalf("README line %d: %q is not one of %v", tb.line, b, documentedBinaries)
					}
					f, ok := fs[v]
					if !ok {
						t.Errorf("README (table at line %d) lists %s for %s, which has no such variable", tb.line, v, b)
						continue
					}
					if documented[b] == nil {
						documented[b] = map[string]bool{}
					}
					documented[b][v] = true
					if b == "devrun" && v == "DEVRUN_BIN" {
						// Its default is where devrun itself is.
						if abs, _ := filepath.Abs(binDir); f.def != binDir && f.def != abs {
							t.Errorf("devrun's DEVRUN_BIN defaults to %q, not its own directory %q", f.def, binDir)
						}
						continue
					}
					if !sameDefault(f, def) {
						t.Errorf("README (table at line %d): %s of %s defaults to %q; %s -h says %q", tb.line, v, b, def, b, f.def)
					}
				}
			}
		}
	}
	for _, b := range documentedBinaries {
		for v := range flags[b] {
			if !documented[b][v] {
				t.Errorf("%s has variable %s (flag -%s), which no README table marked for %s lists", b, v, flags[b][v].name, b)
			}
		}
	}
}

// unitScale turns a README figure's unit into the unit of the code:
// durations in nanoseconds, sizes in bytes.
var unitScale = map[string]float64{
	"": 1, "ms": 1e6, "s": 1e9, "second": 1e9, "seconds": 1e9, "min": 60e9, "minute": 60e9, "minutes": 60e9,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
}

var figure = regexp.MustCompile(`^(\d[\d,]*(?:\.\d+)?)(?: (ms|s|min|KiB|MiB|GiB))?$`)

// parseFigure reads "16,384", "5 s", "16 KiB" in the code's units.
func parseFigure(s string) (float64, bool) {
	m := figure.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseFloat(strings.ReplaceAll(m[1], ",", ""), 64)
	return n * unitScale[m[2]], err == nil
}

// pkgConsts are the constant declarations of one Go package, for
// evaluating the ones README names.
type pkgConsts struct {
	dir   string
	specs map[string]constSpec
}

type constSpec struct {
	expr    ast.Expr
	imports map[string]string // local name -> import path, of its file
}

// modulePrefix is the import path of the repository's root.
const modulePrefix = "github.com/natter/natter/"

// constEval evaluates constant expressions of the repository's packages,
// following other packages of the repository and the time units.
type constEval struct {
	t    *testing.T
	pkgs map[string]*pkgConsts // by directory, relative to the root
}

func (e *constEval) pkg(dir string) *pkgConsts {
	if p, ok := e.pkgs[dir]; ok {
		return p
	}
	p := &pkgConsts{dir: dir, specs: map[string]constSpec{}}
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(repoRoot, dir, "*.go"))
	if err != nil || len(files) == 0 {
		e.t.Fatalf("no Go files in %s", dir)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			e.t.Fatal(err)
		}
		imports := map[string]string{}
		for _, im := range f.Imports {
			path, _ := strconv.Unquote(im.Path.Value)
			local := path[strings.LastIndex(path, "/")+1:]
			if im.Name != nil {
				local = im.Name.Name
			}
			imports[local] = path
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				if len(vs.Values) != len(vs.Names) {
					continue // iota lists: not figures
				}
				for i, n := range vs.Names {
					p.specs[n.Name] = constSpec{expr: vs.Values[i], imports: imports}
				}
			}
		}
	}
	e.pkgs[dir] = p
	return p
}

var timeUnits = map[string]int64{
	"Nanosecond": int64(time.Nanosecond), "Microsecond": int64(time.Microsecond), "Millisecond": int64(time.Millisecond),
	"Second": int64(time.Second), "Minute": int64(time.Minute), "Hour": int64(time.Hour),
}

func (e *constEval) value(dir, name string) (constant.Value, error) {
	s, ok := e.pkg(dir).specs[name]
	if !ok {
		return nil, fmt.Errorf("no constant %s in %s", name, dir)
	}
	return e.eval(dir, s, s.expr)
}

func (e *constEval) eval(dir string, s constSpec, x ast.Expr) (constant.Value, error) {
	switch x := x.(type) {
	case *ast.BasicLit:
		return constant.MakeFromLiteral(x.Value, x.Kind, 0), nil
	case *ast.ParenExpr:
		return e.eval(dir, s, x.X)
	case *ast.Ident:
		return e.value(dir, x.Name)
	case *ast.CallExpr: // a conversion, such as time.Duration(n)
		if len(x.Args) == 1 {
			return e.eval(dir, s, x.Args[0])
		}
	case *ast.UnaryExpr:
		v, err := e.eval(dir, s, x.X)
		if err != nil {
			return nil, err
		}
		return constant.UnaryOp(x.Op, v, 0), nil
	case *ast.SelectorExpr:
		pkg, ok := x.X.(*ast.Ident)
		if !ok {
			break
		}
		path := s.imports[pkg.Name]
		if path == "time" {
			if u, ok := timeUnits[x.Sel.Name]; ok {
				return constant.MakeInt64(u), nil
			}
		}
		if rel, ok := strings.CutPrefix(path, modulePrefix); ok {
			return e.value(filepath.FromSlash(rel), x.Sel.Name)
		}
	case *ast.BinaryExpr:
		a, err := e.eval(dir, s, x.X)
		if err != nil {
			return nil, err
		}
		b, err := e.eval(dir, s, x.Y)
		if err != nil {
			return nil, err
		}
		if x.Op == token.SHL || x.Op == token.SHR {
			n, _ := constant.Uint64Val(b)
			return constant.Shift(a, x.Op, uint(n)), nil
		}
		return constant.BinaryOp(a, x.Op, b), nil
	}
	return nil, fmt.Errorf("%s: cannot evaluate %T", dir, x)
}

// constRef reads a constants-table cell: `dir` `Name`.
func constRef(t *testing.T, cell string) (dir, name string) {
	t.Helper()
	m := backticked.FindAllStringSubmatch(cell, -1)
	if len(m) != 2 {
		t.Fatalf("README constants table: %q is not `dir` `Name`", cell)
	}
	return filepath.FromSlash(m[0][1]), m[1][1]
}

// The constants table gives each constant's value.
func TestREADMEConstants(t *testing.T) {
	ev := &constEval{t: t, pkgs: map[string]*pkgConsts{}}
	tables := readmeTables(t, "constants")
	if len(tables) != 1 {
		t.Fatalf("README has %d constants tables, want 1", len(tables))
	}
	for _, row := range tables[0].rows {
		dir, name := constRef(t, row[2])
		want, ok := parseFigure(row[1])
		if !ok {
			t.Errorf("README: %s's value %q is not a figure", name, row[1])
			continue
		}
		v, err := ev.value(dir, name)
		if err != nil {
			t.Errorf("README names %s in %s: %v", name, dir, err)
			continue
		}
		if have, _ := constant.Float64Val(v); have != want {
			code := v.String()
			if strings.HasSuffix(row[1], "s") && !strings.HasSuffix(row[1], "iB") {
				code = time.Duration(have).String() // a duration, in ns
			}
			t.Errorf("README gives %s (%s) as %s; the code says %s", name, dir, row[1], code)
		}
	}
}

// proseFigure is "NAME (figure" in prose: `SOCKETS_PER_USER` (20),
// [HoldTimeout] (1 s), HISTORY_MAX_BYTES (256 KiB by default.
var proseFigure = regexp.MustCompile("\\[?`?([A-Za-z][A-Za-z0-9_]*)`?\\]? \\((\\d[\\d,]*(?:\\.\\d+)?)(?: (ms|s|minutes?|seconds?|KiB|MiB|GiB))?\\b")

// Figures given in prose next to a variable's or constant's name are the
// ones in force.
func TestDocProseFigures(t *testing.T) {
	known := map[string]float64{}
	for _, b := range []string{"gateway", "auth", "presence"} {
		for env, f := range binaryFlags(t, b) {
			switch f.typ {
			case "duration":
				if d, err := time.ParseDuration(f.def); err == nil {
					known[env] = float64(d)
				}
			case "int", "float":
				if n, err := strconv.ParseFloat(f.def, 64); err == nil {
					known[env] = n
				}
			}
		}
	}
	ev := &constEval{t: t, pkgs: map[string]*pkgConsts{}}
	for _, row := range readmeTables(t, "constants")[0].rows {
		dir, name := constRef(t, row[2])
		if v, err := ev.value(dir, name); err == nil {
			known[name], _ = constant.Float64Val(v)
		}
	}
	checked := 0
	for _, doc := range []string{"README.md", "services/chat/protocol.go", "services/chat/doc.go"} {
		b, err := os.ReadFile(filepath.Join(repoRoot, filepath.FromSlash(doc)))
		if err != nil {
			t.Fatal(err)
		}
		// Go comments wrap: join their lines so a figure split over two
		// lines is still seen.
		text := strings.ReplaceAll(string(b), "\n// ", " ")
		for _, m := range proseFigure.FindAllStringSubmatch(text, -1) {
			want, ok := known[m[1]]
			if !ok {
				continue
			}
			n, _ := strconv.ParseFloat(strings.ReplaceAll(m[2], ",", ""), 64)
			if got := n * unitScale[m[3]]; got != want {
				t.Errorf("%s says %q; the code's value is %v", doc, m[0], want)
			}
			checked++
		}
	}
	t.Logf("%d figures checked in prose", checked)
	// Some figures must be found, or the pattern has stopped matching.
	if checked < 5 {
		t.Errorf("only %d figures found next to a known name; is proseFigure still right?", checked)
	}
}

// The README lists every error code and close code of the protocol.
func TestREADMECodes(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	ev := &constEval{t: t, pkgs: map[string]*pkgConsts{}}
	chat := ev.pkg(filepath.Join("services", "chat"))
	var names []string
	for name := range chat.specs {
		if strings.HasPrefix(name, "Code") || strings.HasPrefix(name, "Close") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if len(names) < 10 {
		t.Fatalf("found only %v in services/chat", names)
	}
	for _, name := range names {
		v, err := ev.value(filepath.Join("services", "chat"), name)
		if err != nil {
			t.Fatal(err)
		}
		s := v.ExactString()
		if v.Kind() == constant.String {
			s = constant.StringVal(v)
		}
		if !strings.Contains(string(readme), "`"+s+"`") {
			t.Errorf("README does not list %s (`%s`)", name, s)
		}
	}
}
