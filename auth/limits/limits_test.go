package limits

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natstest"
)

func newCounters(t *testing.T, window time.Duration) *Counters {
	t.Helper()
	ns := natstest.Start(t)
	kv, err := chat.EnsureAuthLimitsBucket(context.Background(), natstest.JetStream(t, ns.URL()), window, 1)
	if err != nil {
		t.Fatal(err)
	}
	return New(kv, window)
}

func TestAddCountReset(t *testing.T) {
	c := newCounters(t, time.Minute)
	ctx := context.Background()
	key := Key("login_acct", "alice")
	if strings.Contains(key, "alice") {
		t.Fatalf("key %q stores the account in clear", key)
	}
	if n, wait, err := c.Count(ctx, key); err != nil || n != 0 || wait != 0 {
		t.Fatalf("fresh count = %d %v %v", n, wait, err)
	}
	for i := 1; i <= 3; i++ {
		if n, err := c.Add(ctx, key); err != nil || n != i {
			t.Fatalf("Add #%d = %d, %v", i, n, err)
		}
	}
	n, wait, err := c.Count(ctx, key)
	if err != nil || n != 3 || wait <= 50*time.Second || wait > time.Minute {
		t.Fatalf("count = %d, retry after %v, %v; want 3 and about a minute", n, wait, err)
	}
	if err := c.Reset(ctx, key); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := c.Count(ctx, key); n != 0 {
		t.Fatalf("count after reset = %d", n)
	}
	if n, err := c.Add(ctx, key); err != nil || n != 1 {
		t.Fatalf("Add after reset = %d, %v", n, err)
	}
}

func TestConcurrentAddsAllCount(t *testing.T) {
	c := newCounters(t, time.Minute)
	ctx := context.Background()
	key := Key("login_addr", "127.0.0.1")
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if _, err := c.Add(ctx, key); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n, _, _ := c.Count(ctx, key); n != 5 {
		t.Fatalf("count after 5 concurrent adds = %d", n)
	}
}

func TestHeavyContentionCountsEveryAdd(t *testing.T) {
	// A burst from one address: every attempt counts, none fails.
	c := newCounters(t, time.Minute)
	ctx := context.Background()
	key := Key("register_addr", "127.0.0.1")
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			if _, err := c.Add(ctx, key); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n, _, _ := c.Count(ctx, key); n != 32 {
		t.Fatalf("count after 32 concurrent adds = %d", n)
	}
}
