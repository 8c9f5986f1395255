// Package mongotest starts a real embedded MongoDB-wire-compatible store
// (FerretDB on SQLite) for tests, in the test's temporary directory.
package mongotest

import (
	"testing"

	"github.com/natter/natter/services/devstack"
)

// Start starts a store on a free loopback port and returns it; it stops
// when the test ends. URI gives its connection string.
func Start(t testing.TB) *devstack.Ferret {
	t.Helper()
	dir := t.TempDir()
	f, err := devstack.StartFerret("127.0.0.1:0", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}
