// Package chaos is natter's fault suite: it runs the built binaries, real
// nats-server processes and the dev stack's FerretDB, drives websocket
// clients that speak the browser protocol with resume exactly as the page
// does (gateway/web/conn.js), breaks one part at a time (kill -9, SIGSTOP,
// outage, slow readers, a full disk, a partition) and counts, from the
// clients' side, what was lost, shown twice or shown out of order.
//
// The scenarios are the tests of this package (chaos_test.go). By default
// they run small (the short versions `make test` runs); CHAOS=full runs
// them at full size (`make chaos`). Every scenario prints its seed;
// CHAOS_SEED=<n> replays one with the same choices (which clients send to
// whom, which node fails when, the clients' backoff jitter).
package chaos

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/natter/natter/services/servicetest"
)

// stopWait is how long a process may take to exit after SIGTERM before
// the suite kills it.
const stopWait = 15 * time.Second

// Proc is one process the suite started. It is only ever signalled by its
// own PID: the suite never ends a process it did not start.
type Proc struct {
	Name string
	path string
	args []string
	env  []string
	cmd  *exec.Cmd
	out  *servicetest.Buffer
	// exited is closed when the current run of the process has ended.
	exited chan struct{}
	paused bool
	// ports are the addresses the process listens on; held are the
	// suite's listeners on them while it is down (see hold).
	ports []string
	held  []net.Listener
}

// StartProc runs path with args and env (on top of a clean environment),
// stopped with SIGTERM when the test ends; its output is printed if the
// test failed.
func StartProc(t testing.TB, name, path string, args []string, env ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, path: path, args: args, env: env, out: &servicetest.Buffer{}}
	if err := p.start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		p.Stop(t)
		p.release()
		p.keepLog(t)
		if t.Failed() {
			t.Logf("%s output (last 8 KiB):\n%s", name, tail(p.out.String(), 8<<10))
		}
	})
	return p
}

func (p *Proc) start() error {
	p.cmd = exec.Command(p.path, p.args...)
	p.cmd.Env = append(cleanEnv(), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("exec %s: %w", p.path, err)
	}
	exited := make(chan struct{})
	p.exited = exited
	cmd := p.cmd
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	return nil
}

// PID is the process id of the current run.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Output is everything the process has written so far, over all runs.
func (p *Proc) Output() string { return p.out.String() }

// Running reports whether the current run has not exited.
func (p *Proc) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Kill ends the process the hard way (SIGKILL: no shutdown, no flush) and
// waits for it to be gone.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("kill -9 %s (pid %d): %v", p.Name, p.PID(), err)
	}
	<-p.exited
	p.paused = false
	p.hold(t)
}

// Listens records the addresses the process listens on, held by the
// suite while the process is down so it can come back on them.
func (p *Proc) Listens(addrs ...string) { p.ports = append(p.ports, addrs...) }

// hold keeps the stopped process's addresses until Restart: the suite's
// ports are picked at random below the ephemeral range, and on a machine
// shared with other test runs another one may pick a port of a process
// that is down (seen: a NATS node that could not come back, its
// monitoring port taken). The suite listens on the port and resets
// every connection at once, so a client fails over as from a process
// that is down. (A socket bound but not listening would refuse
// connections outright, but cannot be bound over the killed process's
// TIME_WAIT connections without SO_REUSEADDR, which would not keep
// others out.)
func (p *Proc) hold(t testing.TB) {
	for _, addr := range p.ports {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Logf("%s is down and %s is not free: %v", p.Name, addr, err)
			continue
		}
		go resetAll(l.(*net.TCPListener))
		p.held = append(p.held, l)
	}
}

// resetAll resets every connection l accepts, until l is closed.
func resetAll(l *net.TCPListener) {
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			return
		}
		_ = c.SetLinger(0)
		_ = c.Close()
	}
}

// release gives back the ports hold kept.
func (p *Proc) release() {
	for _, l := range p.held {
		_ = l.Close()
	}
	p.held = nil
}

// Pause stops the process (SIGSTOP): it holds its sockets but does nothing.
func (p *Proc) Pause(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %s (pid %d): %v", p.Name, p.PID(), err)
	}
	p.paused = true
}

// Continue resumes a paused process (SIGCONT).
func (p *Proc) Continue(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT %s (pid %d): %v", p.Name, p.PID(), err)
	}
	p.paused = false
}

// Restart starts the process again, with the same arguments and
// environment, after it was killed.
func (p *Proc) Restart(t testing.TB) {
	t.Helper()
	if p.Running() {
		t.Fatalf("restart %s: still running (pid %d)", p.Name, p.PID())
	}
	p.release()
	if err := p.start(); err != nil {
		t.Fatalf("restart %s: %v", p.Name, err)
	}
}

// Stop ends the process as an operator would (SIGTERM), killing it if it
// has not exited within stopWait.
func (p *Proc) Stop(t testing.TB) {
	if !p.Running() {
		return
	}
	if p.paused {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopWait):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
		t.Logf("%s (pid %d) did not stop within %s of SIGTERM: killed", p.Name, p.PID(), stopWait)
	}
	p.hold(t)
}

// cleanEnv is the test's environment without any setting a service reads,
// so a developer's shell cannot change what the suite runs.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH", k == "HOME", k == "TMPDIR", k == "GORACE", k == "GOTRACEBACK":
			env = append(env, kv)
		}
	}
	return env
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// BinDir is where the built binaries are: NATTER_BIN (as `make build`
// leaves them in bin/), checked to hold every one the suite runs.
func BinDir() (string, error) {
	dir := os.Getenv("NATTER_BIN")
	if dir == "" {
		return "", errors.New("NATTER_BIN is not set: run `make build` and set NATTER_BIN=$PWD/bin")
	}
	for _, name := range []string{"devstack", "auth", "presence", "gateway", "nats-server"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("binary %s missing in %s (run `make build`): %w", name, dir, err)
		}
	}
	return dir, nil
}

// keepLog writes the process's whole output to
// $CHAOS_LOGS/<test>/<name>.log when CHAOS_LOGS is set.
func (p *Proc) keepLog(t testing.TB) {
	dir := os.Getenv("CHAOS_LOGS")
	if dir == "" {
		return
	}
	dir = filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("CHAOS_LOGS: %v", err)
		return
	}
	if err := os.WriteFile(filepath.Join(dir, p.Name+".log"), []byte(p.out.String()), 0o644); err != nil {
		t.Logf("CHAOS_LOGS: %v", err)
	}
}
