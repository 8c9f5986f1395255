// Package natsserver starts natter's embedded NATS server: JetStream on,
// stored in a directory of the caller's choice. The dev stack runs it for
// development and natstest for tests; it depends on nothing but the NATS
// server, so NATS-only tests need no database driver.
package natsserver

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout bounds how long the server may take to accept clients
// (JetStream recovers its store first, so a big store takes a while).
const readyTimeout = 30 * time.Second

// Options are the embedded server's options: JetStream on, stored in
// storeDir, listening on natsAddr (port 0 picks a free one) and serving
// monitoring on monitorAddr when it is not empty.
func Options(natsAddr, monitorAddr, storeDir string) (*server.Options, error) {
	host, port, err := splitHostPort(natsAddr)
	if err != nil {
		return nil, fmt.Errorf("nats address: %w", err)
	}
	opts := &server.Options{
		ServerName: "natter-dev",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		// Let `nats` CLI users see everything without accounts in dev.
		NoSigs: true,
	}
	if monitorAddr != "" {
		mh, mp, err := splitHostPort(monitorAddr)
		if err != nil {
			return nil, fmt.Errorf("nats monitoring address: %w", err)
		}
		opts.HTTPHost, opts.HTTPPort = mh, mp
	}
	return opts, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", ps, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// Start starts a server with opts and waits until it accepts clients. A
// nil logger keeps it silent.
func Start(opts *server.Options, logger *slog.Logger) (*server.Server, error) {
	if err := os.MkdirAll(opts.StoreDir, 0o750); err != nil {
		return nil, fmt.Errorf("nats store: %w", err)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	if logger != nil {
		ns.SetLoggerV2(slogLogger{logger}, false, false, false)
	}
	ns.Start()
	if !ns.ReadyForConnections(readyTimeout) {
		ns.Shutdown()
		return nil, fmt.Errorf("nats server on %s:%d not ready within %s", opts.Host, opts.Port, readyTimeout)
	}
	return ns, nil
}

// slogLogger sends the server's log lines to slog.
type slogLogger struct{ l *slog.Logger }

func (n slogLogger) Noticef(format string, v ...any) { n.l.Info(fmt.Sprintf(format, v...)) }
func (n slogLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n slogLogger) Fatalf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n slogLogger) Errorf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n slogLogger) Debugf(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n slogLogger) Tracef(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
