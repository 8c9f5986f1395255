// Package natstest starts real embedded NATS servers for tests: a random
// loopback port, JetStream stored in the test's temporary directory.
package natstest

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/natsserver"
)

// Server is a running test server; Shutdown and Restart simulate outages.
type Server struct {
	*server.Server
	opts *server.Options
}

// Start starts a JetStream-enabled server, stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	opts, err := natsserver.Options("127.0.0.1:0", "", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{opts: opts}
	s.start(t)
	return s
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	ns, err := natsserver.Start(s.opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Keep the port, so a restart comes back where clients reconnect.
	s.opts.Port = ns.Addr().(*net.TCPAddr).Port
	s.Server = ns
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
}

// URL is the server's client URL.
func (s *Server) URL() string { return s.ClientURL() }

// Stop shuts the server down, keeping its store for Restart.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}

// Restart stops the server if running and starts it again on the same port
// with the same store.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.start(t)
}

// Connect opens a client connection closed when the test ends.
func Connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name(t.Name()), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream opens a connection and its JetStream context.
func JetStream(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(Connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	return js
}
