// Package mongotest starts a real embedded MongoDB-wire-compatible store
// (FerretDB on SQLite) for tests, in the test's temporary directory.
package mongotest

import (
	"testing"

	"github.com/natter/natter/services/devstack"
)

// Store is a running test store; Stop and Restart simulate outages.
type Store struct {
	f    *devstack.Ferret
	addr string // fixed after the first start, so clients find it again
	dir  string
}

// Start starts a store on a free loopback port; it stops when the test ends.
func Start(t testing.TB) *Store {
	t.Helper()
	s := &Store{addr: "127.0.0.1:0", dir: t.TempDir()}
	s.start(t)
	return s
}

func (s *Store) start(t testing.TB) {
	t.Helper()
	f, err := devstack.StartFerret(s.addr, s.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.f = f
	s.addr = f.Addr().String()
	t.Cleanup(f.Close)
}

// URI is the store's MongoDB connection string.
func (s *Store) URI() string { return "mongodb://" + s.addr + "/" }

// Stop stops the store, keeping its data for Restart.
func (s *Store) Stop() { s.f.Close() }

// Restart starts the store again on the same port with the same data.
func (s *Store) Restart(t testing.TB) {
	t.Helper()
	s.start(t)
}
