// Package poll waits for asynchronous outcomes in tests by checking them
// repeatedly, instead of sleeping for a guessed time.
package poll

import (
	"testing"
	"time"
)

// Interval is the pause between two checks.
const Interval = 20 * time.Millisecond

// Until calls check until it returns nil, failing t with check's last
// error if timeout passes first.
func Until(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %s: %v", timeout, err)
		}
		time.Sleep(Interval)
	}
}
