// Command devstack runs natter's infrastructure on loopback with nothing
// installed: an embedded NATS server (JetStream on) and an embedded
// MongoDB-wire-compatible store (FerretDB, SQLite). Data stays in -data
// across restarts.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/natter/natter/services/config"
	"github.com/natter/natter/services/devstack"
	"github.com/natter/natter/services/logging"
	"github.com/natter/natter/services/ops"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var cfg devstack.Config
	var dataDir, logFormat, logLevel, pprofAddr string
	fs := config.New(args[0], getenv, stderr)
	fs.String(&cfg.NATSAddr, "nats-addr", "DEVSTACK_NATS_ADDR", devstack.DefaultNATSAddr, "NATS client address")
	fs.String(&cfg.MonitorAddr, "monitor-addr", "DEVSTACK_MONITOR_ADDR", devstack.DefaultMonitorAddr, "NATS monitoring address (empty: off)")
	fs.String(&cfg.MongoAddr, "mongo-addr", "DEVSTACK_MONGO_ADDR", devstack.DefaultMongoAddr, "MongoDB wire protocol address")
	fs.String(&dataDir, "data", "DEVSTACK_DATA", ".data", "directory for NATS and MongoDB data")
	fs.String(&logFormat, "log-format", "LOG_FORMAT", "text", "log format: text or json")
	fs.String(&logLevel, "log-level", "LOG_LEVEL", "info", "log level: debug, info, warn, error")
	fs.String(&pprofAddr, "pprof-addr", "DEVSTACK_PPROF_ADDR", "", "serve net/http/pprof here (loopback, for profiling; empty: off)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if cfg.NATSAddr == "" && cfg.MongoAddr == "" {
		return fmt.Errorf("nothing to run: both -nats-addr and -mongo-addr are empty")
	}
	log, err := logging.New(stdout, logFormat, logLevel)
	if err != nil {
		return err
	}
	if cfg.DataDir, err = filepath.Abs(dataDir); err != nil {
		return err
	}
	cfg.Logger = log
	// FerretDB logs every client connection at info, and dumps whole wire
	// messages at warn for commands it lacks (the driver's endSessions).
	if cfg.StoreLogger, err = logging.New(stdout, logFormat, "error"); err != nil {
		return err
	}
	st, err := devstack.Start(cfg)
	if err != nil {
		return err
	}
	defer st.Close()

	attrs := []any{"data", cfg.DataDir}
	if st.NATS != nil {
		attrs = append(attrs, "nats_url", st.NATS.ClientURL())
		if cfg.MonitorAddr != "" {
			attrs = append(attrs, "monitoring", "http://"+cfg.MonitorAddr)
		}
	}
	if st.Ferret != nil {
		attrs = append(attrs, "mongo_uri", st.Ferret.URI())
	}
	if err := ops.Profiling(ctx, log, pprofAddr); err != nil {
		return err
	}
	log.Info("dev stack ready", attrs...)
	<-ctx.Done()
	log.Info("dev stack stopping")
	return nil
}
