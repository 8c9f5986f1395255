package limits

import (
	"context"
	"errors"
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

func TestTakeCountsAtMostTheLimit(t *testing.T) {
	// A burst on one key, each attempt holding the key for its step: the
	// check and the count are one step, so exactly the limit is taken.
	c := newCounters(t, time.Minute)
	ctx := context.Background()
	key := Key("login_acct", "heidi")
	const burst, limit = 50, 7
	var wg sync.WaitGroup
	var mu sync.Mutex
	taken := 0
	for range burst {
		wg.Go(func() {
			unlock, err := c.Lock(ctx, key)
			if err != nil {
				t.Error(err)
				return
			}
			defer unlock()
			ok, wait, err := c.Take(ctx, key, limit)
			if err != nil {
				t.Error(err)
				return
			}
			if !ok && (wait <= 50*time.Second || wait > time.Minute) {
				t.Errorf("refused with retry after %v, want about a minute", wait)
			}
			if ok {
				mu.Lock()
				taken++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if n, _, _ := c.Count(ctx, key); taken != limit || n != limit {
		t.Fatalf("%d takes at once with limit %d: %d taken, count %d", burst, limit, taken, n)
	}
	// Give takes one back, never below zero.
	for range limit + 2 {
		if err := c.Give(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	if n, _, _ := c.Count(ctx, key); n != 0 {
		t.Fatalf("count after giving all back and more = %d", n)
	}
	if ok, _, err := c.Take(ctx, key, limit); !ok || err != nil {
		t.Fatalf("take after giving back = %v, %v", ok, err)
	}
}

func TestTakeWithoutLockStaysExact(t *testing.T) {
	// Without the lock (other instances), the compare-and-set still never
	// counts past the limit; an attempt may be told the key was contended.
	c := newCounters(t, time.Minute)
	ctx := context.Background()
	key := Key("login_addr", "192.0.2.1")
	const burst, limit = 16, 5
	var wg sync.WaitGroup
	for range burst {
		wg.Go(func() {
			if _, _, err := c.Take(ctx, key, limit); err != nil && !errors.Is(err, ErrContended) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n, _, _ := c.Count(ctx, key); n > limit {
		t.Fatalf("count after %d takes at once = %d, over the limit %d", burst, n, limit)
	}
}

func TestLockWaitsAndGivesUp(t *testing.T) {
	c := newCounters(t, time.Minute)
	unlock, err := c.Lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Lock(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("lock of a held key with an ended context = %v", err)
	}
	// A free key is taken at once, whatever the context.
	other, err := c.Lock(ctx, "other")
	if err != nil {
		t.Fatalf("lock of a free key = %v", err)
	}
	other()
	got := make(chan func(), 1)
	go func() {
		u, err := c.Lock(context.Background(), "k")
		if err != nil {
			t.Error(err)
		}
		got <- u
	}()
	unlock()
	(<-got)()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.locks) != 0 {
		t.Fatalf("%d locks left after every holder let go", len(c.locks))
	}
}
