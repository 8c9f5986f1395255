// Package devstack runs natter's infrastructure in-process for development
// and tests: an embedded NATS server with JetStream and an embedded
// MongoDB-wire-compatible store (FerretDB on SQLite). Nothing is installed;
// data lives in a directory of the caller's choice and survives restarts.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"

	"github.com/FerretDB/FerretDB/ferretdb"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/natter/natter/services/natsserver"
)

// Default loopback addresses of the dev stack.
const (
	DefaultNATSAddr    = "127.0.0.1:4222"
	DefaultMonitorAddr = "127.0.0.1:8222"
	DefaultMongoAddr   = "127.0.0.1:27017"
)

// ErrPortInUse reports an address some other process already listens on.
var ErrPortInUse = errors.New("port in use")

// Config says where the stack listens and keeps its data.
type Config struct {
	NATSAddr    string // client port, host:port; empty: no NATS
	MonitorAddr string // HTTP monitoring, host:port; empty disables it
	MongoAddr   string // MongoDB wire protocol, host:port; empty: no store
	DataDir     string // NATS store in DataDir/nats, FerretDB in DataDir/mongo
	Logger      *slog.Logger
	// StoreLogger receives FerretDB's logs; it logs every client
	// connection at info, so callers usually give it a higher level.
	StoreLogger *slog.Logger
}

// Stack is a running dev stack. Close stops it.
type Stack struct {
	NATS   *server.Server // nil when not started
	Ferret *Ferret        // nil when not started
}

// Start checks that every port is free, then starts NATS and FerretDB.
func Start(cfg Config) (*Stack, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StoreLogger == nil {
		cfg.StoreLogger = cfg.Logger
	}
	for _, p := range []struct{ what, addr string }{
		{"NATS", cfg.NATSAddr}, {"NATS monitoring", cfg.MonitorAddr}, {"MongoDB (FerretDB)", cfg.MongoAddr},
	} {
		if p.addr == "" {
			continue
		}
		if err := checkFree(p.addr); err != nil {
			return nil, fmt.Errorf("%s: %w", p.what, err)
		}
	}
	st := &Stack{}
	if cfg.NATSAddr != "" {
		opts, err := natsserver.Options(cfg.NATSAddr, cfg.MonitorAddr, filepath.Join(cfg.DataDir, "nats"))
		if err != nil {
			return nil, err
		}
		if st.NATS, err = natsserver.Start(opts, cfg.Logger.With("component", "nats")); err != nil {
			return nil, err
		}
	}
	if cfg.MongoAddr != "" {
		f, err := StartFerret(cfg.MongoAddr, filepath.Join(cfg.DataDir, "mongo"), cfg.StoreLogger.With("component", "ferretdb"))
		if err != nil {
			st.Close()
			return nil, err
		}
		st.Ferret = f
	}
	return st, nil
}

// Close stops FerretDB, then NATS, and waits for both.
func (s *Stack) Close() {
	if s.Ferret != nil {
		s.Ferret.Close()
	}
	if s.NATS != nil {
		s.NATS.Shutdown()
		s.NATS.WaitForShutdown()
	}
}

// checkFree fails with ErrPortInUse when addr cannot be listened on, so the
// stack refuses to start with a clear message instead of half-starting.
func checkFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%w: cannot listen on %s (another dev stack, nats-server or mongod running?): %w", ErrPortInUse, addr, err)
	}
	return l.Close()
}

// Ferret is a running embedded FerretDB.
type Ferret struct {
	db     *ferretdb.FerretDB
	addr   net.Addr
	cancel context.CancelFunc
	done   chan struct{}
}

// ferretNew serialises ferretdb.New, which writes a package-level version
// field of FerretDB's: two stores starting at once (parallel tests) would
// otherwise race on it.
var ferretNew sync.Mutex

// StartFerret starts FerretDB with its SQLite files in dir, listening on
// addr (port 0 picks a free one).
func StartFerret(addr, dir string, logger *slog.Logger) (*Ferret, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("ferretdb dir: %w", err)
	}
	if err := os.MkdirAll(abs, 0o750); err != nil {
		return nil, fmt.Errorf("ferretdb dir: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ferretNew.Lock()
	db, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: addr},
		Handler:  "sqlite",
		// The trailing slash makes it a directory: one SQLite file per database.
		SQLiteURL: (&url.URL{Scheme: "file", Path: abs + "/"}).String(),
		Logger:    logger,
	})
	ferretNew.Unlock()
	if err != nil {
		return nil, fmt.Errorf("ferretdb: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Ferret{db: db, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		_ = db.Run(ctx) // returns nil once ctx is cancelled
	}()
	u, err := url.Parse(db.MongoDBURI())
	if err == nil {
		f.addr, err = net.ResolveTCPAddr("tcp", u.Host)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ferretdb address: %w", err)
	}
	return f, nil
}

// URI is the MongoDB connection string of the store.
func (f *Ferret) URI() string { return f.db.MongoDBURI() }

// Addr is the address the store listens on.
func (f *Ferret) Addr() net.Addr { return f.addr }

// Close stops the store and waits until its files are closed. It may be
// called more than once.
func (f *Ferret) Close() {
	f.cancel()
	<-f.done
}
