package presencekv

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/poll"
)

func TestAddHeartbeatRemove(t *testing.T) {
	ns := natstest.Start(t)
	ctx := context.Background()
	kv, err := chat.EnsurePresenceBucket(ctx, natstest.JetStream(t, ns.URL()), chat.PresenceOptions{TTL: 2 * time.Second, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(kv, "gw1")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Add(ctx, "alice", "c1", func() { t.Error("c1 lost") }); err != nil {
		t.Fatal(err)
	}
	var lost atomic.Int32
	if err := r.Add(ctx, "bob", "c2", func() { lost.Add(1) }); err != nil {
		t.Fatal(err)
	}
	// Heartbeats keep entries alive past the TTL.
	beat := time.NewTicker(500 * time.Millisecond) // a heartbeat period, as a gateway runs it
	defer beat.Stop()
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); <-beat.C {
		if n, err := r.Heartbeat(ctx); err != nil || n != 0 {
			t.Fatalf("heartbeat: %d lost, %v", n, err)
		}
	}
	if _, err := kv.Get(ctx, "alice.gw1.c1"); err != nil {
		t.Fatalf("entry with heartbeats: %v", err)
	}
	if err := r.Remove(ctx, "alice", "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "alice.gw1.c1"); err == nil {
		t.Fatal("removed entry still there")
	}

	// A paused gateway: no heartbeat past the TTL. The entry expires, and
	// the next heartbeat does not bring it back: it reports the socket lost.
	poll.Until(t, 10*time.Second, func() error {
		if _, err := kv.Get(ctx, "bob.gw1.c2"); err == nil {
			return errors.New("entry not expired yet")
		}
		return nil
	})
	if n, err := r.Heartbeat(ctx); err != nil || n != 1 || lost.Load() != 1 {
		t.Fatalf("heartbeat after expiry: %d lost (callback %d), %v", n, lost.Load(), err)
	}
	if _, err := kv.Get(ctx, "bob.gw1.c2"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("expired entry resurrected: %v", err)
	}
	if r.Len() != 0 {
		t.Fatalf("registry still holds %d sockets", r.Len())
	}
}
