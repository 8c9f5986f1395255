package deploy

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// goBuildLine is how deploy/docker/Dockerfile builds a service; the test
// below builds the same way and checks the result runs in a distroless
// "static" image (no libc, no dynamic loader).
const goBuildLine = `CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/service ./${SERVICE}`

// imageServices are the values of the Dockerfile's SERVICE and the port
// each listens on.
var imageServices = []struct {
	name, port string
}{
	{"auth", "8081"},
	{"presence", "8082"},
	{"gateway", "8080"},
}

func TestServiceBinariesAreStatic(t *testing.T) {
	root := mustAbs(t, "..")
	for _, svc := range imageServices {
		t.Run(svc.name, func(t *testing.T) {
			t.Parallel()
			bin := filepath.Join(t.TempDir(), svc.name)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./"+svc.name)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go build ./%s: %v\n%s", svc.name, err, out)
			}

			f, err := elf.Open(bin)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Error("has a PT_INTERP program header: it needs a dynamic loader")
				}
			}
			if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
				t.Errorf("needs shared libraries %v (%v)", libs, err)
			}

			info, err := buildinfo.ReadFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			settings := map[string]string{}
			for _, s := range info.Settings {
				settings[s.Key] = s.Value
			}
			for k, want := range map[string]string{"CGO_ENABLED": "0", "-trimpath": "true"} {
				if settings[k] != want {
					t.Errorf("build setting %s = %q, want %q", k, settings[k], want)
				}
			}
		})
	}
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

// stage is one FROM and the instructions under it.
type stage struct {
	base, name string
	body       []instruction
}

// parseDockerfile reads the global ARGs (with their defaults) and the
// stages of a Dockerfile.
func parseDockerfile(t *testing.T, path string) (args map[string]string, stages []*stage) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	args = map[string]string{}
	var logical []string
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		logical = append(logical, cur.String())
		cur.Reset()
	}
	for _, l := range logical {
		cmd, rest, _ := strings.Cut(l, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(rest)}
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			st := &stage{base: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
		case len(stages) == 0 && in.cmd == "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			args[k] = v
		case len(stages) > 0:
			stages[len(stages)-1].body = append(stages[len(stages)-1].body, in)
		}
	}
	if len(stages) == 0 {
		t.Fatalf("%s has no FROM", path)
	}
	return args, stages
}

// expandArgs substitutes ${NAME} and $NAME with the build arguments.
func expandArgs(s string, args map[string]string) string {
	return os.Expand(s, func(k string) string { return args[k] })
}

func TestDockerfile(t *testing.T) {
	globals, stages := parseDockerfile(t, "docker/Dockerfile")
	byName := map[string]*stage{}
	for _, st := range stages {
		if st.name != "" {
			byName[st.name] = st
		}
	}

	t.Run("build stage", func(t *testing.T) {
		build := byName["build"]
		if build == nil {
			t.Fatal("no stage named build")
		}
		if base := expandArgs(build.base, globals); !strings.HasPrefix(base, "golang:1.26") {
			t.Errorf("build stage FROM %s, want golang:1.26...", base)
		}
		var runs []string
		for _, in := range build.body {
			if in.cmd == "RUN" {
				runs = append(runs, in.args)
			}
		}
		i := slices.IndexFunc(runs, func(r string) bool { return strings.Contains(r, goBuildLine) })
		if i < 0 {
			t.Fatalf("no RUN with %s (what TestServiceBinariesAreStatic checks) in %q", goBuildLine, runs)
		}
		for _, cache := range []string{"--mount=type=cache,target=/go/pkg/mod", "--mount=type=cache,target=/root/.cache/go-build"} {
			if !strings.Contains(runs[i], cache) {
				t.Errorf("the go build RUN lacks %s", cache)
			}
		}
	})

	for _, svc := range imageServices {
		t.Run(svc.name, func(t *testing.T) {
			args := map[string]string{}
			for k, v := range globals {
				args[k] = v
			}
			args["SERVICE"] = svc.name

			// Follow the final stage's FROM through named stages down to an
			// image; the instructions apply from the image up.
			var chain []*stage
			st := stages[len(stages)-1]
			for {
				chain = append(chain, st)
				next := byName[expandArgs(st.base, args)]
				if next == nil || slices.Contains(chain, next) {
					break
				}
				st = next
			}
			slices.Reverse(chain)
			base := expandArgs(chain[0].base, args)
			if base != "gcr.io/distroless/static-debian12:nonroot" && base != "scratch" {
				t.Errorf("final image is based on %s, want gcr.io/distroless/static-debian12:nonroot or scratch", base)
			}

			last := map[string]string{}
			var env, expose []string
			var copies []string
			for _, st := range chain {
				for _, in := range st.body {
					a := expandArgs(in.args, args)
					last[in.cmd] = a
					switch in.cmd {
					case "ENV":
						env = append(env, a)
					case "EXPOSE":
						expose = append(expose, strings.Fields(a)...)
					case "COPY":
						copies = append(copies, a)
					}
				}
			}
			user, _, _ := strings.Cut(last["USER"], ":")
			if user == "" || user == "root" || user == "0" {
				t.Errorf("runs as user %q, want a non-root USER", last["USER"])
			}
			if !slices.Contains(copies, "--from=build /out/service /natter") {
				t.Errorf("COPY %q: want --from=build /out/service /natter", copies)
			}
			if got := last["ENTRYPOINT"]; got != `["/natter"]` {
				t.Errorf("ENTRYPOINT %s, want [\"/natter\"]", got)
			}
			if !slices.Contains(expose, svc.port) {
				t.Errorf("EXPOSE %v, want %s", expose, svc.port)
			}
			if !slices.Contains(env, "HTTP_ADDR=0.0.0.0:"+svc.port) {
				t.Errorf("ENV %v, want HTTP_ADDR=0.0.0.0:%s", env, svc.port)
			}
			wantCheck := `CMD ["/natter", "healthcheck", "http://127.0.0.1:` + svc.port + `/readyz"]`
			if got := last["HEALTHCHECK"]; !strings.HasSuffix(got, wantCheck) {
				t.Errorf("HEALTHCHECK %s, want %s", got, wantCheck)
			}
		})
	}
}

// The build context is the repository root: binaries, dev data, history
// and deployment secrets must stay out of it.
func TestDockerignore(t *testing.T) {
	data, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, strings.TrimSuffix(strings.TrimPrefix(l, "/"), "/"))
		}
	}
	for _, want := range []string{".git", "bin", ".data", "services/e2e/artifacts", "deploy/.env", "deploy/secrets"} {
		if !slices.Contains(patterns, want) {
			t.Errorf("../.dockerignore does not exclude %s (has %q)", want, patterns)
		}
	}
}
