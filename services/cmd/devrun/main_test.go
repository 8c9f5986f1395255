package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/natter/natter/services/poll"
	"github.com/natter/natter/services/servicetest"
)

// fakeDirEnv, in a child's environment, makes this test binary, started
// under a service's name, play that service (see fakeService).
const fakeDirEnv = "DEVRUN_TEST_FAKE_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(fakeDirEnv); dir != "" {
		os.Exit(fakeService(filepath.Base(os.Args[0]), dir))
	}
	os.Exit(m.Run())
}

// fakeService stands in for auth, presence or gateway: it serves /readyz
// on HTTP_ADDR, answering 200 once the file <dir>/<name>.ready exists and
// printing each answer, and stops on SIGTERM. A fake gateway prints what auth's /readyz answers as it
// starts, which a real gateway needs to be 200 (auth's token keys).
func fakeService(name, dir string) int {
	exists := func(file string) bool {
		_, err := os.Stat(filepath.Join(dir, file))
		return err == nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", os.Getenv("HTTP_ADDR"))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	if name == "gateway" {
		resp, err := http.Get(os.Getenv("AUTH_URL") + "/readyz")
		if err != nil {
			fmt.Println("auth at start:", err)
		} else {
			_ = resp.Body.Close()
			fmt.Println("auth at start:", resp.Status)
		}
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := http.StatusServiceUnavailable
		if exists(name + ".ready") {
			code = http.StatusOK
		}
		fmt.Println("readyz", code)
		w.WriteHeader(code)
	}), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	<-ctx.Done()
	_ = srv.Close()
	fmt.Println("stopped")
	return 0
}

// devrun is run() on fake services, with NATS and MongoDB "given" so no
// dev stack starts.
type devrun struct {
	dir     string // the fakes' control files
	out     *servicetest.Buffer
	gateway string // base URL
	stop    context.CancelFunc
	done    chan error
}

func startDevRun(t *testing.T) *devrun {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	d := &devrun{dir: t.TempDir(), out: &servicetest.Buffer{}, done: make(chan error, 1)}
	bin := t.TempDir()
	for _, name := range []string{"auth", "presence", "gateway"} {
		if err := os.Symlink(exe, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(fakeDirEnv, d.dir) // inherited by the children only: TestMain has run
	addrs := servicetest.FreeAddrs(t, 3)
	d.gateway = "http://" + addrs[0]
	env := map[string]string{"NATS_URL": "nats://127.0.0.1:1", "MONGO_URI": "mongodb://127.0.0.1:1/"}
	args := []string{"devrun", "-bin", bin, "-data", t.TempDir(),
		"-gateway-addr", addrs[0], "-auth-addr", addrs[1], "-presence-addr", addrs[2]}
	ctx, cancel := context.WithCancel(context.Background())
	d.stop = cancel
	go func() { d.done <- run(ctx, args, func(k string) string { return env[k] }, d.out, d.out) }()
	t.Cleanup(func() {
		cancel()
		<-d.done
		if t.Failed() {
			t.Logf("devrun output:\n%s", d.out)
		}
	})
	return d
}

// setReady makes the fake name answer 200 on /readyz.
func (d *devrun) setReady(t *testing.T, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(d.dir, name+".ready"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitLines waits until line, prefixed with name as devrun prints it,
// appears at least n times in the output.
func (d *devrun) waitLines(t *testing.T, name, line string, n int) {
	t.Helper()
	want := fmt.Sprintf("%-8s | %s\n", name, line)
	poll.Until(t, 20*time.Second, func() error {
		if got := strings.Count(d.out.String(), want); got < n {
			return fmt.Errorf("%q printed %d times, want %d", want, got, n)
		}
		return nil
	})
}

// interrupt is Ctrl-C: run returns once every child has stopped.
func (d *devrun) interrupt(t *testing.T) error {
	t.Helper()
	d.stop()
	select {
	case err := <-d.done:
		d.done <- err // for the cleanup
		return err
	case <-time.After(2 * stopTimeout):
		t.Fatal("devrun did not return after Ctrl-C")
		return nil
	}
}

func TestStartsInDependencyOrder(t *testing.T) {
	d := startDevRun(t)

	// auth and presence start at once; the gateway waits for their
	// /readyz, checked auth first, then presence.
	d.waitLines(t, "auth", "readyz 503", 2)
	if out := d.out.String(); !strings.Contains(out, "started presence") || strings.Contains(out, "started gateway") {
		t.Fatalf("with auth not ready: want presence started and no gateway:\n%s", out)
	}
	d.setReady(t, "auth")
	d.waitLines(t, "presence", "readyz 503", 2)
	if strings.Contains(d.out.String(), "started gateway") {
		t.Fatal("gateway started before presence was ready")
	}
	d.setReady(t, "presence")
	d.waitLines(t, "gateway", "auth at start: 200 OK", 1)

	// Ready is announced only once the gateway is.
	d.waitLines(t, "gateway", "readyz 503", 2)
	if strings.Contains(d.out.String(), "natter is ready") {
		t.Fatal("natter announced ready before the gateway was")
	}
	d.setReady(t, "gateway")
	d.waitLines(t, "devrun", fmt.Sprintf("natter is ready: open %s (Ctrl-C stops everything)", d.gateway), 1)

	if err := d.interrupt(t); err != nil {
		t.Fatalf("devrun after Ctrl-C: %v", err)
	}
	out := d.out.String()
	for _, name := range []string{"auth", "presence", "gateway"} {
		if !strings.Contains(out, fmt.Sprintf("%-8s | stopped\n", name)) {
			t.Errorf("%s did not stop on SIGTERM", name)
		}
	}
	if i, j := strings.Index(out, "gateway  | stopped"), strings.Index(out, "auth     | stopped"); i > j {
		t.Error("auth stopped before the gateway that uses it")
	}
	if !strings.HasSuffix(out, "devrun   | all stopped\n") {
		t.Errorf("output does not end with devrun's all stopped:\n%s", out)
	}
}

func TestReadyOnlyWhenAllAre(t *testing.T) {
	d := startDevRun(t)
	d.setReady(t, "auth")
	d.setReady(t, "presence")
	d.waitLines(t, "gateway", "auth at start: 200 OK", 1)

	// auth stops being ready once the gateway runs (say its MongoDB went
	// away): a browser could not register, so natter is not ready.
	// Its 503s before auth.ready existed were printed before the gateway
	// started; count from here.
	before := strings.Count(d.out.String(), "auth     | readyz 503\n")
	if err := os.Remove(filepath.Join(d.dir, "auth.ready")); err != nil {
		t.Fatal(err)
	}
	d.waitLines(t, "auth", "readyz 503", before+1) // a round has seen it
	d.setReady(t, "gateway")
	d.waitLines(t, "auth", "readyz 503", before+3)
	if strings.Contains(d.out.String(), "natter is ready") {
		t.Fatal("natter announced ready while auth was not")
	}
	d.setReady(t, "auth")
	d.waitLines(t, "devrun", fmt.Sprintf("natter is ready: open %s (Ctrl-C stops everything)", d.gateway), 1)
}

func TestCtrlCWhileWaiting(t *testing.T) {
	d := startDevRun(t)
	d.waitLines(t, "auth", "readyz 503", 1)
	if err := d.interrupt(t); err != nil {
		t.Fatalf("Ctrl-C while waiting for auth: %v, want a normal exit", err)
	}
	out := d.out.String()
	if strings.Contains(out, "started gateway") {
		t.Error("gateway started although auth never was ready")
	}
	for _, line := range []string{"devrun   | stopping\n", "auth     | stopped\n", "devrun   | all stopped\n"} {
		if !strings.Contains(out, line) {
			t.Errorf("no %q in the output", line)
		}
	}
	// presence may have had SIGTERM before its handler was set up: gone
	// either way.
	d.checkGone(t, "presence")
}

func TestServiceExitingWhileWaiting(t *testing.T) {
	d := startDevRun(t)
	d.waitLines(t, "auth", "readyz 503", 1)
	if err := syscall.Kill(childPid(t, d, "auth"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-d.done
	d.done <- err // for the cleanup
	if err == nil || !strings.Contains(err.Error(), "auth exited") {
		t.Fatalf("run = %v, want auth exited", err)
	}
	out := d.out.String()
	if strings.Contains(out, "started gateway") {
		t.Error("gateway started although auth exited")
	}
	d.checkGone(t, "presence")
}

// checkGone checks that the child devrun started as name has exited.
func (d *devrun) checkGone(t *testing.T, name string) {
	t.Helper()
	if err := syscall.Kill(childPid(t, d, name), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("%s still running after devrun returned (kill 0: %v)", name, err)
	}
}

// childPid is the pid devrun printed when it started name.
func childPid(t *testing.T, d *devrun, name string) int {
	t.Helper()
	var pid int
	poll.Until(t, 20*time.Second, func() error {
		for _, line := range strings.Split(d.out.String(), "\n") {
			if _, err := fmt.Sscanf(line, "devrun   | started "+name+" (pid %d)", &pid); err == nil {
				return nil
			}
		}
		return fmt.Errorf("no pid printed for %s", name)
	})
	return pid
}
