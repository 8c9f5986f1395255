package deploy

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// composeSecrets are the variables compose.yaml requires, with fake
// values. Each password differs, so the tests can tell which one a service
// was given.
var composeSecrets = map[string]string{
	"NATS_GATEWAY_PASSWORD":  "fake-gateway-pw",
	"NATS_AUTH_PASSWORD":     "fake-auth-pw",
	"NATS_PRESENCE_PASSWORD": "fake-presence-pw",
	"NATS_WATCH_PASSWORD":    "fake-watch-pw",
	"NATS_ADMIN_PASSWORD":    "fake-admin-pw",
	"NATS_SYS_PASSWORD":      "fake-sys-pw",
	"AUTH_SIGNING_KEY_PATH":  "/nonexistent/auth-signing-key.pem",
}

// composeFile is the part of `docker-compose config`'s output the tests
// read. Ports and volumes stay untyped: docker-compose 1.x writes them as
// strings, Compose v2 as mappings.
type composeFile struct {
	Services map[string]composeService `json:"services"`
	Networks map[string]struct {
		IPAM struct {
			Config []struct {
				Subnet string `json:"subnet"`
			} `json:"config"`
		} `json:"ipam"`
	} `json:"networks"`
	Volumes map[string]any `json:"volumes"`
	Secrets map[string]struct {
		File string `json:"file"`
	} `json:"secrets"`
}

type composeService struct {
	Image string `json:"image"`
	Build *struct {
		Context    string            `json:"context"`
		Dockerfile string            `json:"dockerfile"`
		Args       map[string]string `json:"args"`
	} `json:"build"`
	Command     []string       `json:"command"`
	Environment map[string]any `json:"environment"`
	Healthcheck *struct {
		Test    []string `json:"test"`
		Disable bool     `json:"disable"`
	} `json:"healthcheck"`
	Networks map[string]*struct {
		Aliases []string `json:"aliases"`
	} `json:"networks"`
	DependsOn map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
	Ports   []any `json:"ports"`
	Volumes []any `json:"volumes"`
	Secrets []struct {
		Source string `json:"source"`
		Target string `json:"target"`
	} `json:"secrets"`
}

// env returns a variable of the service's environment as a string.
func (s composeService) env(name string) string {
	v, ok := s.Environment[name]
	if !ok || v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

// runComposeConfig runs `docker-compose config` on compose.yaml with only
// env in its environment and an empty env file, so neither the caller's
// variables nor a developer's deploy/.env change the outcome.
func runComposeConfig(t *testing.T, env map[string]string) (stdout, stderr []byte, err error) {
	t.Helper()
	bin, lookErr := exec.LookPath("docker-compose")
	if lookErr != nil {
		t.Fatalf("docker-compose is needed to check deploy/compose.yaml (%v): "+
			"install it with `apt-get install -y --no-install-recommends docker-compose` (.ci/run does)", lookErr)
	}
	dir := t.TempDir()
	envFile := filepath.Join(dir, "empty.env")
	if err := os.WriteFile(envFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--env-file", envFile, "-f", "compose.yaml", "config")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "LANG=C.UTF-8"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.Bytes(), errOut.Bytes(), err
}

// loadCompose validates compose.yaml with docker-compose and decodes the
// configuration it renders (anchors merged, variables substituted).
func loadCompose(t *testing.T) composeFile {
	t.Helper()
	out, errOut, err := runComposeConfig(t, composeSecrets)
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, errOut)
	}
	var c composeFile
	if err := yaml.Unmarshal(out, &c); err != nil {
		t.Fatalf("decoding docker-compose config's output: %v\n%s", err, out)
	}
	return c
}

// published is one port a service publishes on the host.
type published struct {
	HostIP, HostPort, Target string
}

// publishedPorts reads a service's ports in either rendering:
// "127.0.0.1:8000:8000/tcp" or {host_ip, published, target}.
func publishedPorts(t *testing.T, s composeService) []published {
	t.Helper()
	var ps []published
	for _, p := range s.Ports {
		switch p := p.(type) {
		case string:
			spec, _, _ := strings.Cut(p, "/")
			i := strings.LastIndex(spec, ":")
			if i < 0 {
				ps = append(ps, published{Target: spec})
				continue
			}
			hostPart, target := spec[:i], spec[i+1:]
			hostIP, hostPort := "", hostPart
			if j := strings.LastIndex(hostPart, ":"); j >= 0 {
				hostIP, hostPort = strings.Trim(hostPart[:j], "[]"), hostPart[j+1:]
			}
			ps = append(ps, published{HostIP: hostIP, HostPort: hostPort, Target: target})
		case map[string]any:
			str := func(k string) string {
				if v, ok := p[k]; ok && v != nil {
					return fmt.Sprint(v)
				}
				return ""
			}
			ps = append(ps, published{HostIP: str("host_ip"), HostPort: str("published"), Target: str("target")})
		default:
			t.Fatalf("port %v: unexpected form %T", p, p)
		}
	}
	return ps
}

// mount is one volume or bind mount of a service.
type mount struct {
	Source, Target string
	ReadOnly       bool
}

// mounts reads a service's volumes in either rendering:
// "source:target:ro" or {source, target, read_only}.
func mounts(t *testing.T, s composeService) []mount {
	t.Helper()
	var ms []mount
	for _, v := range s.Volumes {
		switch v := v.(type) {
		case string:
			parts := strings.Split(v, ":")
			m := mount{Source: parts[0]}
			if len(parts) > 1 {
				m.Target = parts[1]
			}
			if len(parts) > 2 {
				m.ReadOnly = slices.Contains(strings.Split(parts[2], ","), "ro")
			}
			ms = append(ms, m)
		case map[string]any:
			ro, _ := v["read_only"].(bool)
			ms = append(ms, mount{Source: fmt.Sprint(v["source"]), Target: fmt.Sprint(v["target"]), ReadOnly: ro})
		default:
			t.Fatalf("volume %v: unexpected form %T", v, v)
		}
	}
	return ms
}

// natterServices are compose.yaml's instances of natter's own images: the
// service each runs (its NATS user and build argument) and its HTTP port.
var natterServices = []struct {
	name, role, port string
}{
	{"auth", "auth", "8081"},
	{"presence-1", "presence", "8082"},
	{"presence-2", "presence", "8082"},
	{"gateway-1", "gateway", "8080"},
	{"gateway-2", "gateway", "8080"},
}

var natsNodes = []string{"nats-0", "nats-1", "nats-2"}

func TestComposeConfig(t *testing.T) {
	c := loadCompose(t)

	t.Run("services", func(t *testing.T) {
		want := []string{"auth", "gateway-1", "gateway-2", "lb", "mongo-0", "mongo-1", "mongo-2", "mongo-init",
			"nats-0", "nats-1", "nats-2", "presence-1", "presence-2"}
		got := slices.Sorted(func(yield func(string) bool) {
			for name := range c.Services {
				if !yield(name) {
					return
				}
			}
		})
		if !slices.Equal(got, want) {
			t.Errorf("services = %v, want %v", got, want)
		}
	})

	t.Run("healthchecks", func(t *testing.T) {
		for name, s := range c.Services {
			if name == "mongo-init" {
				continue // one shot: done is its health
			}
			if s.Healthcheck == nil || s.Healthcheck.Disable || len(s.Healthcheck.Test) == 0 ||
				slices.Contains(s.Healthcheck.Test, "NONE") {
				t.Errorf("%s: no health check", name)
			}
		}
	})

	t.Run("only loopback ports", func(t *testing.T) {
		for name, s := range c.Services {
			for _, p := range publishedPorts(t, s) {
				if p.HostIP != "127.0.0.1" {
					t.Errorf("%s publishes %+v on %q: only 127.0.0.1 is allowed", name, p, p.HostIP)
				}
			}
		}
		if got := publishedPorts(t, c.Services["lb"]); !slices.Contains(got, published{"127.0.0.1", "8000", "8000"}) {
			t.Errorf("lb publishes %+v, want 127.0.0.1:8000 -> 8000", got)
		}
	})

	natsConf, err := os.ReadFile("nats/nats.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range natsNodes {
		t.Run(node, func(t *testing.T) {
			s := c.Services[node]
			if !strings.HasPrefix(s.Image, "nats:") {
				t.Errorf("image = %q, want nats:...", s.Image)
			}
			if got, want := strings.Join(s.Command, " "), "-c /etc/nats/nats.conf"; got != want {
				t.Errorf("command = %q, want %q", got, want)
			}
			alias := node + ".nats"
			if n := s.Networks["natter"]; n == nil || !slices.Contains(n.Aliases, alias) {
				t.Errorf("no network alias %s on network natter", alias)
			}
			// The alias is what the cluster's routes dial.
			if route := "nats://" + alias + ":6222"; !bytes.Contains(natsConf, []byte(route)) {
				t.Errorf("nats/nats.conf has no route %s", route)
			}
			if got := s.env("SERVER_NAME"); got != node {
				t.Errorf("SERVER_NAME = %q, want %q", got, node)
			}
			for k, v := range composeSecrets {
				if strings.HasPrefix(k, "NATS_") && s.env(k) != v {
					t.Errorf("%s = %q, want %q", k, s.env(k), v)
				}
			}
			ms := mounts(t, s)
			for _, f := range []string{"nats.conf", "accounts.conf"} {
				want := mount{Source: filepath.Join(mustAbs(t, "nats"), f), Target: "/etc/nats/" + f, ReadOnly: true}
				if !slices.Contains(ms, want) {
					t.Errorf("mounts %+v lack %+v", ms, want)
				}
			}
			// nats.conf's store_dir is /data/jetstream: /data must be a
			// named volume, or JetStream loses everything with the
			// container.
			if !slices.ContainsFunc(ms, func(m mount) bool {
				_, named := c.Volumes[m.Source]
				return m.Target == "/data" && named && !m.ReadOnly
			}) {
				t.Errorf("mounts %+v: no named volume at /data", ms)
			}
		})
	}

	t.Run("mongo", func(t *testing.T) {
		for _, name := range []string{"mongo-0", "mongo-1", "mongo-2"} {
			s := c.Services[name]
			if cmd := strings.Join(s.Command, " "); !strings.Contains(cmd, "--replSet rs0") || !strings.Contains(cmd, "--bind_ip_all") {
				t.Errorf("%s: command = %q, want --replSet rs0 --bind_ip_all", name, cmd)
			}
			if !slices.ContainsFunc(mounts(t, s), func(m mount) bool {
				_, named := c.Volumes[m.Source]
				return m.Target == "/data/db" && named
			}) {
				t.Errorf("%s: no named volume at /data/db", name)
			}
			if got := c.Services["mongo-init"].DependsOn[name].Condition; got != "service_healthy" {
				t.Errorf("mongo-init waits for %s with %q, want service_healthy", name, got)
			}
		}
		script, err := os.ReadFile("docker/mongo-init.js")
		if err != nil {
			t.Fatal(err)
		}
		for _, host := range []string{"mongo-0:27017", "mongo-1:27017", "mongo-2:27017", `"rs0"`, "NotYetInitialized"} {
			if !bytes.Contains(script, []byte(host)) {
				t.Errorf("docker/mongo-init.js does not mention %s", host)
			}
		}
	})

	var subnet netip.Prefix
	if n := c.Networks["natter"].IPAM.Config; len(n) == 1 {
		subnet, _ = netip.ParsePrefix(n[0].Subnet)
	}
	if !subnet.IsValid() {
		t.Errorf("network natter has no fixed subnet (auth's TRUSTED_PROXIES names it): %+v", c.Networks["natter"])
	}

	for _, tc := range natterServices {
		t.Run(tc.name, func(t *testing.T) {
			s := c.Services[tc.name]
			if s.Build == nil || s.Build.Dockerfile != "deploy/docker/Dockerfile" || s.Build.Args["SERVICE"] != tc.role ||
				s.Build.Context != mustAbs(t, "..") {
				t.Errorf("build = %+v, want the repository root with deploy/docker/Dockerfile and SERVICE=%s", s.Build, tc.role)
			}
			if s.Image == "" {
				t.Error("no image name")
			}
			for k, want := range map[string]string{
				"NATS_USER":     tc.role,
				"NATS_PASSWORD": composeSecrets["NATS_"+strings.ToUpper(tc.role)+"_PASSWORD"],
				"NATS_URL":      "nats://nats-0.nats:4222,nats://nats-1.nats:4222,nats://nats-2.nats:4222",
				"JS_REPLICAS":   "3",
				"HTTP_ADDR":     "0.0.0.0:" + tc.port,
				"LOG_FORMAT":    "json",
			} {
				if got := s.env(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			wantCheck := []string{"CMD", "/natter", "healthcheck", "http://127.0.0.1:" + tc.port + "/readyz"}
			if s.Healthcheck == nil || !slices.Equal(s.Healthcheck.Test, wantCheck) {
				t.Errorf("healthcheck = %+v, want test %q", s.Healthcheck, wantCheck)
			}
			for _, node := range natsNodes {
				if got := s.DependsOn[node].Condition; got != "service_healthy" {
					t.Errorf("waits for %s with %q, want service_healthy", node, got)
				}
			}
		})
	}

	t.Run("auth mongo and key", func(t *testing.T) {
		s := c.Services["auth"]
		if got, want := s.env("MONGO_URI"), "mongodb://mongo-0:27017,mongo-1:27017,mongo-2:27017/?replicaSet=rs0"; got != want {
			t.Errorf("MONGO_URI = %q, want %q", got, want)
		}
		if got := s.DependsOn["mongo-init"].Condition; got != "service_completed_successfully" {
			t.Errorf("waits for mongo-init with %q, want service_completed_successfully", got)
		}
		if got := s.env("TRUSTED_PROXIES"); got != subnet.String() {
			t.Errorf("TRUSTED_PROXIES = %q, want the network's subnet %s", got, subnet)
		}
		// The signing key arrives as a secret file, never in the
		// environment.
		if s.env("AUTH_SIGNING_KEY") != "" {
			t.Error("AUTH_SIGNING_KEY is set: the key belongs in a secret file")
		}
		if len(s.Secrets) != 1 {
			t.Fatalf("secrets = %+v, want the signing key", s.Secrets)
		}
		target := s.Secrets[0].Target
		if target == "" {
			target = s.Secrets[0].Source
		}
		if !strings.HasPrefix(target, "/") {
			target = "/run/secrets/" + target
		}
		if got := s.env("AUTH_SIGNING_KEY_FILE"); got != target {
			t.Errorf("AUTH_SIGNING_KEY_FILE = %q, want the secret's path %q", got, target)
		}
		if got := c.Secrets[s.Secrets[0].Source].File; got != composeSecrets["AUTH_SIGNING_KEY_PATH"] {
			t.Errorf("secret %s comes from %q, want AUTH_SIGNING_KEY_PATH", s.Secrets[0].Source, got)
		}
	})

	for _, name := range []string{"gateway-1", "gateway-2"} {
		t.Run(name+" upstreams", func(t *testing.T) {
			s := c.Services[name]
			if got := s.env("AUTH_URL"); got != "http://auth:8081" {
				t.Errorf("AUTH_URL = %q, want http://auth:8081", got)
			}
			if got := s.DependsOn["auth"].Condition; got != "service_healthy" {
				t.Errorf("waits for auth with %q, want service_healthy", got)
			}
			// Browsers load the page from the balancer's published address.
			if origins := strings.Split(s.env("ALLOWED_ORIGINS"), ","); !slices.Contains(origins, "http://localhost:8000") {
				t.Errorf("ALLOWED_ORIGINS = %q, want http://localhost:8000 among them", s.env("ALLOWED_ORIGINS"))
			}
			if got := c.Services["lb"].DependsOn[name].Condition; got != "service_healthy" {
				t.Errorf("lb waits for %s with %q, want service_healthy", name, got)
			}
		})
	}

	t.Run("lb", func(t *testing.T) {
		want := mount{Source: filepath.Join(mustAbs(t, "docker"), "nginx.conf"), Target: "/etc/nginx/nginx.conf", ReadOnly: true}
		if ms := mounts(t, c.Services["lb"]); !slices.Contains(ms, want) {
			t.Errorf("mounts %+v lack %+v", ms, want)
		}
		conf, err := os.ReadFile("docker/nginx.conf")
		if err != nil {
			t.Fatal(err)
		}
		for _, directive := range []string{
			"listen 8000;",
			"server gateway-1:8080", "server gateway-2:8080",
			"proxy_http_version 1.1;",
			"proxy_set_header Upgrade $http_upgrade;",
			"proxy_set_header Connection $connection_upgrade;",
			"proxy_set_header X-Forwarded-For",
			"proxy_read_timeout",
		} {
			if !bytes.Contains(conf, []byte(directive)) {
				t.Errorf("docker/nginx.conf lacks %q", directive)
			}
		}
	})
}

// A missing secret must stop compose, naming the variable, rather than
// start NATS with an empty password.
func TestComposeRequiresSecrets(t *testing.T) {
	for name := range composeSecrets {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := make(map[string]string)
			for k, v := range composeSecrets {
				if k != name {
					env[k] = v
				}
			}
			_, errOut, err := runComposeConfig(t, env)
			if err == nil {
				t.Fatalf("docker-compose config succeeded without %s", name)
			}
			if !bytes.Contains(errOut, []byte(name)) {
				t.Errorf("docker-compose config failed without naming %s:\n%s", name, errOut)
			}
		})
	}
}

func mustAbs(t *testing.T, path string) string {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}
