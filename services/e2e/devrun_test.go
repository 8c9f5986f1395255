package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/mongotest"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/poll"
	"github.com/natter/natter/services/servicetest"
)

// stack is a devrun started by a test, with its ports.
type stack struct {
	cmd      *exec.Cmd
	out      *servicetest.Buffer
	exited   chan struct{}
	gateway  string // base URLs
	auth     string
	presence string
	natsURL  string
}

// startDevRun runs devrun in its own process group, as a terminal would run
// `make dev`, with every port free and data in a temporary directory.
func startDevRun(t *testing.T, dataDir string, env ...string) *stack {
	t.Helper()
	addrs := servicetest.FreeAddrs(t, 6)
	s := &stack{
		out:      &servicetest.Buffer{},
		exited:   make(chan struct{}),
		gateway:  "http://" + addrs[0],
		auth:     "http://" + addrs[1],
		presence: "http://" + addrs[2],
		natsURL:  "nats://" + addrs[3],
	}
	s.cmd = exec.Command(filepath.Join(binDir, "devrun"),
		"-bin", binDir, "-data", dataDir,
		"-gateway-addr", addrs[0], "-auth-addr", addrs[1], "-presence-addr", addrs[2],
		"-nats-addr", addrs[3], "-monitor-addr", addrs[4], "-mongo-addr", addrs[5])
	s.cmd.Env = append(cleanEnv(), env...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-s.exited:
		default:
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.exited
		}
		if t.Failed() {
			t.Logf("devrun output:\n%s", s.out.String())
		}
	})
	return s
}

// cleanEnv is this process's environment without the settings devrun reads,
// so a developer's shell does not change what the test runs.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "NATS_URL", "MONGO_URI", "HTTP_ADDR", "AUTH_URL", "LOG_FORMAT", "LOG_LEVEL",
			"AUTH_SIGNING_KEY_FILE", "AUTH_SIGNING_KEY", "AUTH_GENERATE_SIGNING_KEY":
			continue
		}
		if strings.HasPrefix(k, "DEVSTACK_") || strings.HasPrefix(k, "DEVRUN_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (s *stack) waitReady(t *testing.T) {
	t.Helper()
	for _, u := range []string{s.gateway, s.auth, s.presence} {
		servicetest.WaitStatus(t, u+"/readyz", http.StatusOK, 90*time.Second)
	}
}

// interrupt sends SIGINT to devrun's process group, as Ctrl-C in its
// terminal does, and waits for devrun to exit.
func (s *stack) interrupt(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.exited:
	case <-time.After(40 * time.Second):
		t.Fatal("devrun did not exit within 40s of Ctrl-C")
	}
}

// proc is a process as /proc shows it; start tells a pid's reuse apart.
type proc struct {
	pid   int
	name  string
	start string
}

// children lists the processes whose parent is pid.
func children(t *testing.T, pid int) []proc {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []proc
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ok := readStat(p)
		if ok && st.ppid == pid {
			out = append(out, proc{pid: p, name: st.name, start: st.start})
		}
	}
	return out
}

type stat struct {
	name, state, start string
	ppid               int
}

// readStat parses /proc/<pid>/stat: "pid (comm) state ppid ... starttime".
func readStat(pid int) (stat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, false
	}
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return stat{}, false
	}
	fields := strings.Fields(string(b[end+2:]))
	if len(fields) < 20 {
		return stat{}, false
	}
	ppid, _ := strconv.Atoi(fields[1])
	return stat{name: string(b[open+1 : end]), state: fields[0], ppid: ppid, start: fields[19]}, true
}

// alive reports whether p still runs (a zombie has finished running).
func alive(p proc) bool {
	st, ok := readStat(p.pid)
	return ok && st.start == p.start && st.state != "Z"
}

func names(ps []proc) []string {
	var n []string
	for _, p := range ps {
		n = append(n, p.name)
	}
	slices.Sort(n)
	return n
}

func TestDevRunStartsAllAndCtrlCStopsAll(t *testing.T) {
	data := t.TempDir()
	s := startDevRun(t, data)
	s.waitReady(t)

	kids := children(t, s.cmd.Process.Pid)
	if got, want := names(kids), []string{"auth", "devstack", "gateway", "presence"}; !slices.Equal(got, want) {
		t.Fatalf("devrun's children = %v, want %v", got, want)
	}
	poll.Until(t, 10*time.Second, func() error {
		if !strings.Contains(s.out.String(), "natter is ready: open "+s.gateway) {
			return fmt.Errorf("devrun did not announce the gateway URL")
		}
		return nil
	})
	// Every line is prefixed with the name of the process that wrote it.
	for _, name := range []string{"devstack", "auth", "presence", "gateway"} {
		if !strings.Contains(s.out.String(), fmt.Sprintf("\n%-8s | ", name)) {
			t.Errorf("no output line prefixed %q", name)
		}
	}

	t.Run("nats CLI recipes", func(t *testing.T) { checkRecipes(t, s.natsURL) })

	// A person's first steps, through the one URL: register, log in.
	if r := postJSON(t, s.gateway+"/api/register", `{"account":"Zoe","password":"quiet-meadow-77","name":"佐伊"}`, ""); r.status != http.StatusCreated {
		t.Fatalf("register through the gateway: %d %s", r.status, r.body)
	}
	login := postJSON(t, s.gateway+"/api/login", `{"account":"zoe","password":"quiet-meadow-77"}`, "")
	if login.status != http.StatusOK || login.cookie == "" {
		t.Fatalf("login through the gateway: %d %s", login.status, login.body)
	}
	if r := getWithCookie(t, s.gateway+"/api/me", login.cookie); r.status != http.StatusOK || !strings.Contains(r.body, "佐伊") {
		t.Fatalf("me through the gateway: %d %s", r.status, r.body)
	}
	chatThroughGateway(t, s.gateway, login.cookie)
	presenceThroughGateway(t, s.gateway, login.cookie)

	s.interrupt(t)
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("devrun exit code after Ctrl-C = %d, want 0", code)
	}
	for _, k := range kids {
		if alive(k) {
			t.Errorf("%s (pid %d) still running after devrun exited", k.name, k.pid)
		}
	}
	out := s.out.String()
	for _, line := range []string{"gateway stopped", "presence stopped", "auth stopped", "dev stack stopping", "all stopped"} {
		if !strings.Contains(out, line) {
			t.Errorf("no %q in the output: not a graceful stop", line)
		}
	}

	// `make dev` again on the same data: the account, and the session
	// signed with the kept key, are still there.
	s = startDevRun(t, data)
	s.waitReady(t)
	if r := getWithCookie(t, s.gateway+"/api/me", login.cookie); r.status != http.StatusOK || !strings.Contains(r.body, "佐伊") {
		t.Fatalf("session after a restart of everything: %d %s", r.status, r.body)
	}
	s.interrupt(t)
}

// chatThroughGateway opens a websocket as the browser would (cookie from
// login, the page's origin), sends to the lobby, and sees it stored and
// delivered with the sender the real auth's token names.
func chatThroughGateway(t *testing.T, gateway, cookie string) {
	t.Helper()
	s, _ := dialChat(t, gateway, cookie, 0)
	s.send(t, `{"type":"send","id":"e2e-1","to":{"room":"lobby"},"text":"你好 natter"}`)
	var acked, delivered bool
	s.waitFor(t, "the ack and the delivery of e2e-1", func(o map[string]any) bool {
		switch o["type"] {
		case "ack":
			acked = acked || o["id"] == "e2e-1"
		case "message":
			from, _ := o["from"].(map[string]any)
			delivered = delivered || (o["text"] == "你好 natter" && from["name"] == "佐伊")
		}
		return acked && delivered
	})
	s.close()
}

// presenceThroughGateway: with zoe connected, a second user's socket
// comes online and goes offline, and zoe's socket is told both, through
// the real gateway, presence and auth.
func presenceThroughGateway(t *testing.T, gateway, zoeCookie string) {
	t.Helper()
	if r := postJSON(t, gateway+"/api/register", `{"account":"yan","password":"amber-river-19","name":"Yan"}`, ""); r.status != http.StatusCreated {
		t.Fatalf("register yan: %d %s", r.status, r.body)
	}
	yan := postJSON(t, gateway+"/api/login", `{"account":"yan","password":"amber-river-19"}`, "")
	zoe, _ := dialChat(t, gateway, zoeCookie, 0)
	yanSock, _ := dialChat(t, gateway, yan.cookie, 0)
	zoe.waitPresence(t, "Yan", true)
	yanSock.waitPresence(t, "佐伊", true)
	start := time.Now()
	yanSock.close()
	zoe.waitPresence(t, "Yan", false)
	t.Logf("offline seen %s after the socket closed", time.Since(start))
}

type httpResult struct {
	status int
	body   string
	cookie string // the token cookie, "name=value"
}

func postJSON(t *testing.T, url, body, cookie string) httpResult {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return do(t, req, cookie)
}

func getWithCookie(t *testing.T, url, cookie string) httpResult {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req, cookie)
}

func do(t *testing.T, req *http.Request, cookie string) httpResult {
	t.Helper()
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := httpResult{status: resp.StatusCode, body: string(b)}
	for _, c := range resp.Cookies() {
		if c.Name == "natter_token" && c.Value != "" {
			r.cookie = c.Name + "=" + c.Value
		}
	}
	return r
}

func TestDevRunKilledLeavesNoChildren(t *testing.T) {
	s := startDevRun(t, t.TempDir())
	s.waitReady(t)
	kids := children(t, s.cmd.Process.Pid)
	if len(kids) != 4 {
		t.Fatalf("children = %v, want 4", names(kids))
	}
	// kill -9 of the supervisor alone: its children must not outlive it.
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-s.exited
	poll.Until(t, 20*time.Second, func() error {
		for _, k := range kids {
			if alive(k) {
				return fmt.Errorf("%s (pid %d) still running", k.name, k.pid)
			}
		}
		return nil
	})
}

func TestDevRunUsesGivenServers(t *testing.T) {
	ns := natstest.Start(t)
	db := mongotest.Start(t)
	s := startDevRun(t, t.TempDir(), "NATS_URL="+ns.URL(), "MONGO_URI="+db.URI())
	s.waitReady(t)
	if got, want := names(children(t, s.cmd.Process.Pid)), []string{"auth", "gateway", "presence"}; !slices.Equal(got, want) {
		t.Fatalf("children with NATS_URL and MONGO_URI set = %v, want %v (no devstack)", got, want)
	}
	// The services set up the given server, not an embedded one.
	js := natstest.JetStream(t, ns.URL())
	if _, err := js.Stream(context.Background(), chat.StreamName); err != nil {
		t.Fatalf("stream on the given NATS: %v", err)
	}
	s.interrupt(t)
}

func TestDevRunPortTaken(t *testing.T) {
	// Something already holds the dev stack's NATS port: devrun says which
	// port and exits non-zero instead of half-starting.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addrs := servicetest.FreeAddrs(t, 5)
	cmd := exec.Command(filepath.Join(binDir, "devrun"), "-bin", binDir, "-data", t.TempDir(),
		"-nats-addr", busy.Addr().String(), "-gateway-addr", addrs[0], "-auth-addr", addrs[1],
		"-presence-addr", addrs[2], "-monitor-addr", addrs[3], "-mongo-addr", addrs[4])
	cmd.Env = cleanEnv()
	cmd.WaitDelay = time.Minute
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("devrun started with its NATS port taken:\n%s", out)
	}
	if !strings.Contains(string(out), "port in use") || !strings.Contains(string(out), busy.Addr().String()) {
		t.Errorf("output does not say which port is in use:\n%s", out)
	}
}
