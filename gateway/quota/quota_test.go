package quota

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/poll"
)

func bucket(t *testing.T) *natstest.Server {
	t.Helper()
	return natstest.Start(t)
}

// meters are n gateways' meters on one bucket, on one fake clock.
func meters(t *testing.T, n int, window time.Duration, budget int64, clock func() time.Time) []*Meter {
	t.Helper()
	ns := bucket(t)
	kv, err := chat.EnsureQuotaBucket(context.Background(), natstest.JetStream(t, ns.URL()), 1)
	if err != nil {
		t.Fatal(err)
	}
	ms := make([]*Meter, n)
	for i := range ms {
		ms[i] = NewMeter(kv, "sends", window, budget)
		ms[i].now = clock
	}
	return ms
}

// However many gateways spend at once, a user's window never passes the
// budget, and the whole budget can be spent.
func TestBudgetHoldsAcrossGateways(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 30, 0, time.UTC)
	ms := meters(t, 3, time.Minute, 100, func() time.Time { return now })
	var spent atomic.Int64
	var wg sync.WaitGroup
	for _, m := range ms {
		for range 4 { // sockets per gateway
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 60 {
					ok, _, err := m.Spend(context.Background(), "alice", 1)
					if err != nil {
						t.Error(err)
						return
					}
					if ok {
						spent.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	// 720 attempts; leases left unspent on a gateway are lost to the user,
	// so the total is at most the budget and at least the budget less three
	// gateways' last leases.
	if got := spent.Load(); got > 100 || got < 100-3*10 {
		t.Fatalf("%d sends allowed of a budget of 100 over 3 gateways", got)
	}
	// Another user has a budget of their own.
	if ok, _, err := ms[0].Spend(context.Background(), "bob", 1); !ok || err != nil {
		t.Fatalf("bob refused: %v %v", ok, err)
	}
}

func TestWindows(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 50, 0, time.UTC)
	m := meters(t, 1, time.Minute, 30, func() time.Time { return now })[0]
	ctx := context.Background()
	tests := []struct {
		name     string
		advance  time.Duration
		n        int64
		wantOK   bool
		wantWait time.Duration
	}{
		{"a spend bigger than a lease", 0, 25, true, 0},
		{"the rest of the budget", 0, 5, true, 0},
		{"over the budget: wait for the next window", 0, 1, false, 10 * time.Second},
		{"more than a whole budget, ever", 0, 31, false, 10 * time.Second},
		{"the next window has a fresh budget", 10 * time.Second, 30, true, 0},
		{"and is spent too", 30 * time.Second, 1, false, 30 * time.Second},
	}
	for _, tt := range tests {
		now = now.Add(tt.advance)
		ok, wait, err := m.Spend(ctx, "carol", tt.n)
		if err != nil || ok != tt.wantOK || wait != tt.wantWait {
			t.Fatalf("%s: ok %v, wait %v, err %v; want ok %v, wait %v", tt.name, ok, wait, err, tt.wantOK, tt.wantWait)
		}
	}
}

// A gateway that restarts (a new meter) finds what the user spent: the
// count is in the bucket, not in the gateway.
func TestSpentSurvivesGatewayRestart(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	ms := meters(t, 2, time.Hour, 1000, func() time.Time { return now })
	ctx := context.Background()
	if ok, _, _ := ms[0].Spend(ctx, "dan", 990); !ok {
		t.Fatal("first spend refused")
	}
	if ok, _, _ := ms[1].Spend(ctx, "dan", 20); ok {
		t.Fatal("a second gateway let dan spend past his budget")
	}
	if ok, _, _ := ms[1].Spend(ctx, "dan", 10); !ok {
		t.Fatal("a second gateway refused the rest of dan's budget")
	}
}

// With the bucket unreachable (its leader being elected after a node
// failed), a gateway grants each user one lease of the window on its
// own, then refuses with the bucket's error; once the bucket is back,
// spending goes through it again.
func TestUnreachableBucketGrantsOneLease(t *testing.T) {
	ns := bucket(t)
	kv, err := chat.EnsureQuotaBucket(context.Background(), natstest.JetStream(t, ns.URL()), 1)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 3, 10, 0, 30, 0, time.UTC)
	m := NewMeter(kv, "sends", time.Minute, 100)
	m.now = func() time.Time { return now }
	spend := func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		ok, _, err := m.Spend(ctx, "alice", 1)
		return ok, err
	}
	if ok, err := spend(); !ok || err != nil { // a recorded lease of 10, 1 spent
		t.Fatalf("first send: %v %v", ok, err)
	}
	ns.Stop()
	allowed := 0
	for range 30 {
		ok, err := spend()
		if err != nil {
			break
		}
		if !ok {
			t.Fatal("refused as over budget with the bucket down")
		}
		allowed++
	}
	if allowed != 9+10 { // the rest of the recorded lease, then one unrecorded
		t.Fatalf("%d sends allowed with the bucket down, want 19 (9 left + one lease of 10)", allowed)
	}
	ns.Restart(t)
	now = now.Add(time.Minute) // a new window: its lease comes from the bucket again
	poll.Until(t, 20*time.Second, func() error {
		ok, err := spend()
		if err == nil && !ok {
			t.Fatal("refused as over budget in a new window")
		}
		return err
	})
}
