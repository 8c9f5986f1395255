// Command devrun is what `make dev` runs: the embedded dev stack and the
// auth, presence and gateway services as its children, in one terminal,
// each output line prefixed with the child's name.
//
// It is the one foreground process: children run in their own process
// groups, so Ctrl-C reaches devrun alone, which stops the services first,
// then the dev stack, each within stopTimeout, and waits for all of them.
// Children also get SIGTERM if devrun itself dies (Pdeathsig), so nothing
// outlives it. If any child exits on its own, devrun stops the rest and
// fails.
//
// With NATS_URL or MONGO_URI set, that part of the embedded stack is not
// started and the services use the given server instead.
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/natter/natter/services/config"
	"github.com/natter/natter/services/devstack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "devrun:", err)
		os.Exit(1)
	}
}

const (
	// stopTimeout is how long a child may take to stop after SIGTERM
	// before it is killed; services promise 10 s.
	stopTimeout = 12 * time.Second
	// startTimeout bounds the wait for the dev stack's ports and for the
	// gateway to become ready.
	startTimeout = 60 * time.Second
)

type settings struct {
	binDir                              string
	dataDir                             string
	gatewayAddr, authAddr, presenceAddr string
	natsAddr, monitorAddr, mongoAddr    string
	natsURL, mongoURI                   string
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var s settings
	exe, _ := os.Executable()
	fs := config.New(args[0], getenv, stderr)
	fs.String(&s.binDir, "bin", "DEVRUN_BIN", filepath.Dir(exe), "directory holding the devstack, auth, presence and gateway binaries")
	fs.String(&s.dataDir, "data", "DEVSTACK_DATA", ".data", "dev stack data directory")
	fs.String(&s.gatewayAddr, "gateway-addr", "GATEWAY_ADDR", "127.0.0.1:8080", "gateway HTTP address: the URL people open")
	fs.String(&s.authAddr, "auth-addr", "AUTH_ADDR", "127.0.0.1:8081", "auth HTTP address")
	fs.String(&s.presenceAddr, "presence-addr", "PRESENCE_ADDR", "127.0.0.1:8082", "presence HTTP address (health, metrics)")
	fs.String(&s.natsAddr, "nats-addr", "DEVSTACK_NATS_ADDR", devstack.DefaultNATSAddr, "embedded NATS client address")
	fs.String(&s.monitorAddr, "monitor-addr", "DEVSTACK_MONITOR_ADDR", devstack.DefaultMonitorAddr, "embedded NATS monitoring address")
	fs.String(&s.mongoAddr, "mongo-addr", "DEVSTACK_MONGO_ADDR", devstack.DefaultMongoAddr, "embedded MongoDB (FerretDB) address")
	fs.String(&s.natsURL, "nats-url", "NATS_URL", "", "use this NATS server instead of the embedded one")
	fs.String(&s.mongoURI, "mongo-uri", "MONGO_URI", "", "use this MongoDB instead of the embedded store")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	out := &lineWriter{w: stdout}
	sup := &supervisor{out: out, exited: make(chan *child, 4)}
	defer sup.stopAll()

	// The embedded stack, for whichever of NATS and MongoDB is not given.
	var stackArgs []string
	var waitFor []string
	if s.natsURL == "" {
		s.natsURL = "nats://" + s.natsAddr
		stackArgs = append(stackArgs, "-nats-addr", s.natsAddr, "-monitor-addr", s.monitorAddr)
		waitFor = append(waitFor, s.natsAddr)
	} else {
		stackArgs = append(stackArgs, "-nats-addr", "", "-monitor-addr", "")
	}
	if s.mongoURI == "" {
		s.mongoURI = "mongodb://" + s.mongoAddr + "/"
		stackArgs = append(stackArgs, "-mongo-addr", s.mongoAddr)
		waitFor = append(waitFor, s.mongoAddr)
	} else {
		stackArgs = append(stackArgs, "-mongo-addr", "")
	}
	if len(waitFor) > 0 {
		if err := sup.start(s.binDir, "devstack", append(stackArgs, "-data", s.dataDir), nil); err != nil {
			return err
		}
		if err := sup.waitPorts(ctx, waitFor); err != nil || ctx.Err() != nil {
			return err
		}
	} else {
		out.printf("devrun", "NATS_URL and MONGO_URI given: not starting the embedded dev stack")
	}

	common := map[string]string{"NATS_URL": s.natsURL}
	authEnv := map[string]string{"HTTP_ADDR": s.authAddr, "MONGO_URI": s.mongoURI}
	if getenv("AUTH_SIGNING_KEY_FILE") == "" && getenv("AUTH_SIGNING_KEY") == "" {
		// Development: one key, generated on first start, kept with the data.
		dataDir, err := filepath.Abs(s.dataDir)
		if err != nil {
			return err
		}
		authEnv["AUTH_SIGNING_KEY_FILE"] = filepath.Join(dataDir, "auth", "signing-key.pem")
		authEnv["AUTH_GENERATE_SIGNING_KEY"] = "true"
	}
	services := []struct {
		name string
		env  map[string]string
	}{
		{"auth", authEnv},
		{"presence", map[string]string{"HTTP_ADDR": s.presenceAddr}},
		{"gateway", map[string]string{"HTTP_ADDR": s.gatewayAddr, "AUTH_URL": "http://" + s.authAddr}},
	}
	for _, svc := range services {
		for k, v := range common {
			svc.env[k] = v
		}
		if err := sup.start(s.binDir, svc.name, nil, svc.env); err != nil {
			return err
		}
	}
	go sup.announce(ctx, "http://"+s.gatewayAddr)

	select {
	case <-ctx.Done():
		out.printf("devrun", "stopping")
		return nil
	case c := <-sup.exited:
		return fmt.Errorf("%s exited: %v", c.name, c.err)
	}
}

// child is one supervised process.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
	err  error         // its exit status, set before done closes
}

type supervisor struct {
	out      *lineWriter
	children []*child // in start order
	exited   chan *child
}

func (s *supervisor) start(binDir, name string, args []string, env map[string]string) error {
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout = s.out.prefixed(name)
	cmd.Stderr = s.out.prefixed(name)
	// Own process group: the terminal's Ctrl-C reaches devrun only, which
	// stops children in order. Pdeathsig: devrun dying takes them along.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w (did `make build` run?)", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	s.children = append(s.children, c)
	s.out.printf("devrun", "started %s (pid %d)", name, cmd.Process.Pid)
	go func() {
		c.err = cmd.Wait()
		close(c.done)
		select {
		case s.exited <- c:
		default:
		}
	}()
	return nil
}

// stopAll stops the children in reverse start order: services before the
// stack they use.
func (s *supervisor) stopAll() {
	for i := len(s.children) - 1; i >= 0; i-- {
		c := s.children[i]
		select {
		case <-c.done:
			continue
		default:
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(stopTimeout):
			s.out.printf("devrun", "%s did not stop within %s: killing it", c.name, stopTimeout)
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	s.out.printf("devrun", "all stopped")
}

// waitPorts waits until every addr accepts connections, or a child exits.
func (s *supervisor) waitPorts(ctx context.Context, addrs []string) error {
	deadline := time.Now().Add(startTimeout)
	for _, addr := range addrs {
		for {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				_ = conn.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("dev stack not listening on %s after %s", addr, startTimeout)
			}
			select {
			case <-ctx.Done():
				return nil
			case c := <-s.exited:
				return fmt.Errorf("%s exited: %v", c.name, c.err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// announce tells the operator where to go once the gateway is ready.
func (s *supervisor) announce(ctx context.Context, url string) {
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				s.out.printf("devrun", "natter is ready: open %s (Ctrl-C stops everything)", url)
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	s.out.printf("devrun", "gateway not ready after %s: see its log lines above", startTimeout)
}

// lineWriter writes whole lines from several children to one output, each
// prefixed with its child's name, never interleaving inside a line.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) printf(name, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%-8s | %s\n", name, fmt.Sprintf(format, args...))
}

func (l *lineWriter) prefixed(name string) io.Writer { return &prefixWriter{l: l, name: name} }

type prefixWriter struct {
	l       *lineWriter
	name    string
	partial []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	n := len(b)
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.partial = append(p.partial, b...)
			return n, nil
		}
		line := append(p.partial, b[:i]...)
		p.partial = p.partial[:0]
		p.l.printf(p.name, "%s", line)
		b = b[i+1:]
	}
}
