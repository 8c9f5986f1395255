// Command devrun is what `make dev` runs: the embedded dev stack and the
// auth, presence and gateway services as its children, in one terminal,
// each output line prefixed with the child's name.
//
// It starts them in the order they depend on each other: the dev stack,
// then auth and presence once its ports accept connections, then the
// gateway once auth and presence answer /readyz (the gateway asks auth for
// its token keys as it starts, and presence who is online), so a normal
// start logs no retry. It says natter is ready once all three answer
// /readyz with 200.
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
	"errors"
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
	// startTimeout bounds the wait for the dev stack's ports; a service
	// not ready after it is reported (devrun keeps waiting for it).
	startTimeout = 60 * time.Second
	// pollInterval paces the checks of ports and /readyz while starting.
	pollInterval = 100 * time.Millisecond
	// readyzTimeout bounds one /readyz request.
	readyzTimeout = 2 * time.Second
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
		if err := sup.waitPorts(ctx, waitFor); err != nil {
			return stopped(out, err)
		}
	} else {
		out.printf("devrun", "NATS_URL and MONGO_URI given: not starting the embedded dev stack")
	}

	authEnv := map[string]string{"NATS_URL": s.natsURL, "HTTP_ADDR": s.authAddr, "MONGO_URI": s.mongoURI}
	if getenv("TRUSTED_PROXIES") == "" {
		// The gateway proxies /api/ from loopback: its X-Forwarded-For is
		// the browser's address, for the per-address limits.
		authEnv["TRUSTED_PROXIES"] = "127.0.0.1"
	}
	if getenv("AUTH_SIGNING_KEY_FILE") == "" && getenv("AUTH_SIGNING_KEY") == "" {
		// Development: one key, generated on first start, kept with the data.
		dataDir, err := filepath.Abs(s.dataDir)
		if err != nil {
			return err
		}
		authEnv["AUTH_SIGNING_KEY_FILE"] = filepath.Join(dataDir, "auth", "signing-key.pem")
		authEnv["AUTH_GENERATE_SIGNING_KEY"] = "true"
	}
	auth := service{"auth", "http://" + s.authAddr}
	presence := service{"presence", "http://" + s.presenceAddr}
	gateway := service{"gateway", "http://" + s.gatewayAddr}
	if err := sup.start(s.binDir, auth.name, nil, authEnv); err != nil {
		return err
	}
	if err := sup.start(s.binDir, presence.name, nil, map[string]string{"NATS_URL": s.natsURL, "HTTP_ADDR": s.presenceAddr}); err != nil {
		return err
	}
	if err := sup.waitReady(ctx, auth, presence); err != nil {
		return stopped(out, err)
	}
	if err := sup.start(s.binDir, gateway.name, nil, map[string]string{
		"NATS_URL": s.natsURL, "HTTP_ADDR": s.gatewayAddr, "AUTH_URL": auth.url,
	}); err != nil {
		return err
	}
	// Ready means a browser can register, log in and open /ws: every
	// service answers /readyz (the gateway's includes auth's token keys).
	if err := sup.waitReady(ctx, auth, presence, gateway); err != nil {
		return stopped(out, err)
	}
	out.printf("devrun", "natter is ready: open %s (Ctrl-C stops everything)", gateway.url)

	select {
	case <-ctx.Done():
		return stopped(out, ctx.Err())
	case c := <-sup.exited:
		return fmt.Errorf("%s exited: %v", c.name, c.err)
	}
}

// stopped turns an interrupted wait (Ctrl-C) into a normal exit: the
// deferred stopAll then stops every child.
func stopped(out *lineWriter, err error) error {
	if errors.Is(err, context.Canceled) {
		out.printf("devrun", "stopping")
		return nil
	}
	return err
}

// service is a started service and the base URL of its HTTP server.
type service struct {
	name, url string
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

// waitPorts waits until every addr accepts connections. It fails if one
// does not within startTimeout, or a child exits.
func (s *supervisor) waitPorts(ctx context.Context, addrs []string) error {
	for _, addr := range addrs {
		listening := func() bool {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return false
			}
			_ = conn.Close()
			return true
		}
		err := s.waitUntil(ctx, listening, func() error {
			return fmt.Errorf("dev stack not listening on %s after %s", addr, startTimeout)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// waitReady waits until every service answers 200 on /readyz in one
// round of checks, so none has stopped being ready while the next was
// waited for. One not ready within startTimeout is reported with its
// /readyz answer (which names the failing dependency) and waited for
// still: a slow external NATS or MongoDB may yet come. It fails if a
// child exits.
func (s *supervisor) waitReady(ctx context.Context, services ...service) error {
	client := &http.Client{Timeout: readyzTimeout}
	var waiting service // the first not ready in the latest round
	var answer string   // and its /readyz answer
	allReady := func() bool {
		for _, svc := range services {
			var ok bool
			if ok, answer = readyz(ctx, client, svc.url); !ok {
				waiting = svc
				return false
			}
		}
		return true
	}
	return s.waitUntil(ctx, allReady, func() error {
		s.out.printf("devrun", "%s not ready after %s (%s/readyz: %s): see its log lines above; still waiting",
			waiting.name, startTimeout, waiting.url, answer)
		return nil
	})
}

// readyz asks url's /readyz and reports whether it answered 200, and
// its answer (status and the start of the body) or error.
func readyz(ctx context.Context, client *http.Client, url string) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/readyz", nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return resp.StatusCode == http.StatusOK, fmt.Sprintf("%s %s", resp.Status, bytes.TrimSpace(body))
}

// waitUntil calls done every pollInterval until it reports true. Once
// startTimeout has passed it calls late, once, and gives up with late's
// error if there is one. It returns ctx's error when ctx ends (Ctrl-C),
// and an error naming the child if a child exits meanwhile.
func (s *supervisor) waitUntil(ctx context.Context, done func() bool, late func() error) error {
	deadline := time.Now().Add(startTimeout)
	for !done() {
		if !deadline.IsZero() && time.Now().After(deadline) {
			if err := late(); err != nil {
				return err
			}
			deadline = time.Time{}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case c := <-s.exited:
			return fmt.Errorf("%s exited: %v", c.name, c.err)
		case <-time.After(pollInterval):
		}
	}
	return nil
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
