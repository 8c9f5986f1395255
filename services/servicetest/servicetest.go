// Package servicetest runs a natter service's run function inside a test,
// the way its main does, and finds the address it listens on from its
// "listening" log line, so services are started with ":0" ports.
package servicetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/natter/natter/services/poll"
)

// RunFunc is the signature of every service's run.
type RunFunc func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error

// StopTimeout is how long a service may take to return after its context
// is cancelled: the 10 s every service promises.
const StopTimeout = 10 * time.Second

// Service is a service running in the test.
type Service struct {
	// URL is the service's HTTP base URL, e.g. "http://127.0.0.1:41234".
	URL string

	cancel context.CancelFunc
	exited chan struct{} // closed when run has returned
	err    error         // what run returned, set before exited closes
	logs   *Buffer
	waited atomic.Bool // the test took run's error through Wait
}

// Start runs run with env (LOG_FORMAT=json added) and args, waits for its
// "listening" log line, and stops it when the test ends. On failure its
// logs are printed.
func Start(t testing.TB, name string, run RunFunc, env map[string]string, args ...string) *Service {
	t.Helper()
	getenv := func(k string) string {
		if k == "LOG_FORMAT" {
			return "json"
		}
		return env[k]
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &Service{cancel: cancel, exited: make(chan struct{}), logs: &Buffer{}}
	addrc := make(chan string, 1)
	go scanLogs(io.TeeReader(pr, s.logs), addrc)
	go func() {
		s.err = run(ctx, append([]string{name}, args...), getenv, pw, pw)
		_ = pw.Close()
		close(s.exited)
	}()
	t.Cleanup(func() {
		if err := s.Stop(); err != nil && !s.waited.Load() {
			t.Errorf("%s: %v", name, err)
		}
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, s.logs.String())
		}
	})
	select {
	case addr := <-addrc:
		s.URL = "http://" + addr
	case <-s.exited:
		t.Fatalf("%s exited before listening: %v\n%s", name, s.err, s.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not log a listening address within 30s\n%s", name, s.logs.String())
	}
	return s
}

// scanLogs reads JSON log lines and sends the first "listening" address
// of the service's main server (not of a "server" beside it, such as ops).
func scanLogs(r io.Reader, addrc chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for sc.Scan() {
		var line struct {
			Msg    string `json:"msg"`
			Addr   string `json:"addr"`
			Server string `json:"server"`
		}
		if !sent && json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" && line.Addr != "" && line.Server == "" {
			addrc <- line.Addr
			sent = true
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// Stop cancels the service's context and returns what run returned; it is
// an error if run takes longer than StopTimeout.
func (s *Service) Stop() error {
	s.cancel()
	select {
	case <-s.exited:
		return s.err
	case <-time.After(StopTimeout):
		return fmt.Errorf("did not stop within %s after cancel", StopTimeout)
	}
}

// Wait waits until run returns by itself and returns its error.
func (s *Service) Wait() error {
	<-s.exited
	s.waited.Store(true)
	return s.err
}

// Logs is everything the service has logged so far.
func (s *Service) Logs() string { return s.logs.String() }

// Get requests path and returns the status code and body.
func (s *Service) Get(t testing.TB, path string) (int, []byte) {
	t.Helper()
	return Get(t, s.URL+path)
}

// WaitReady polls /readyz until it answers 200.
func (s *Service) WaitReady(t testing.TB) {
	t.Helper()
	WaitStatus(t, s.URL+"/readyz", http.StatusOK, 30*time.Second)
}

// WaitStatus polls url until it answers code.
func WaitStatus(t testing.TB, url string, code int, timeout time.Duration) {
	t.Helper()
	poll.Until(t, timeout, func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != code {
			return fmt.Errorf("GET %s: %d %s, want %d", url, resp.StatusCode, bytes.TrimSpace(body), code)
		}
		return nil
	})
}

// Get requests url and returns the status code and body.
func Get(t testing.TB, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, body
}

// Buffer is a bytes.Buffer safe for one writer and concurrent readers:
// a process's output while a test reads it.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// FreeAddrs returns n loopback addresses free now, for servers that
// start later. Their ports lie below the kernel's ephemeral range: a port
// the kernel handed out for ":0", once closed, can be handed to any other
// process binding ":0" (a test package running in parallel) before the
// server it was meant for binds it; that server then fails to start, or
// the test talks to the other process. The kernel never hands out a port
// below the range by itself.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	hi := ephemeralStart()
	lo := max(1024, hi/2)
	var addrs []string
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for tries := 0; len(addrs) < n; tries++ {
		if tries == 1000 {
			t.Fatalf("no %d free ports in [%d, %d) after %d tries", n, lo, hi, tries)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", lo+rand.IntN(hi-lo)))
		if err != nil {
			continue // in use
		}
		held = append(held, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}

// ephemeralStart is the first port of the kernel's ephemeral range
// (32768 where it cannot be read).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if f := strings.Fields(string(b)); err == nil && len(f) == 2 {
		if p, err := strconv.Atoi(f[0]); err == nil && p > 2048 {
			return p
		}
	}
	return 32768
}
