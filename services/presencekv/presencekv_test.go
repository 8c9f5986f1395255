package presencekv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/poll"
)

func newBucket(t *testing.T, ttl time.Duration) (*chat.PresenceKV, *natstest.Server) {
	t.Helper()
	ns := natstest.Start(t)
	kv, err := chat.EnsurePresenceBucket(context.Background(), natstest.JetStream(t, ns.URL()), chat.PresenceOptions{TTL: ttl, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	return kv, ns
}

func newRegistry(t *testing.T, kv *chat.PresenceKV, gateway string) *Registry {
	t.Helper()
	r, err := New(kv, gateway)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// lastSeq is the bucket's last stream sequence: one more per write.
func lastSeq(t *testing.T, kv *chat.PresenceKV) uint64 {
	t.Helper()
	st, err := kv.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq
}

func entry[T any](t *testing.T, kv *chat.PresenceKV, key string) (T, error) {
	t.Helper()
	var v T
	e, err := kv.Get(context.Background(), key)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		t.Fatalf("%s = %s: %v", key, e.Value(), err)
	}
	return v, nil
}

// heartbeatUntilAnswered beats until a heartbeat succeeds (NATS back).
func heartbeatUntilAnswered(t *testing.T, r *Registry) {
	t.Helper()
	poll.Until(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := r.Heartbeat(ctx)
		return err
	})
}

func waitGone(t *testing.T, kv *chat.PresenceKV, key string) {
	t.Helper()
	poll.Until(t, 10*time.Second, func() error {
		if _, err := kv.Get(context.Background(), key); !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("%s still there (%v)", key, err)
		}
		return nil
	})
}

func TestAddHeartbeatRemove(t *testing.T) {
	kv, _ := newBucket(t, 2*time.Second)
	ctx := context.Background()
	r := newRegistry(t, kv, "gw1")
	for i := range 100 {
		if err := r.Add(ctx, fmt.Sprintf("u%d", i), "c", func() { t.Errorf("u%d lost", i) }); err != nil {
			t.Fatal(err)
		}
	}
	lease, err := entry[chat.PresenceLease](t, kv, "gateway/gw1")
	if err != nil || lease.Gateway != "gw1" || lease.Epoch == "" {
		t.Fatalf("lease = %+v, %v", lease, err)
	}
	sock, err := entry[chat.PresenceEntry](t, kv, "u7.gw1.c")
	if err != nil || sock.User != "u7" || sock.Epoch != lease.Epoch {
		t.Fatalf("socket entry = %+v, %v; want epoch %s", sock, err, lease.Epoch)
	}
	// A heartbeat is one write, whatever the number of sockets.
	before := lastSeq(t, kv)
	if n, err := r.Heartbeat(ctx); err != nil || n != 0 {
		t.Fatalf("heartbeat: %d lost, %v", n, err)
	}
	if d := lastSeq(t, kv) - before; d != 1 {
		t.Fatalf("a heartbeat of 100 sockets wrote %d messages, want 1", d)
	}
	// Heartbeats keep the lease alive past the TTL; socket entries, never
	// refreshed, do not expire.
	beat := time.NewTicker(500 * time.Millisecond) // a heartbeat period, as a gateway runs it
	defer beat.Stop()
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); <-beat.C {
		if n, err := r.Heartbeat(ctx); err != nil || n != 0 {
			t.Fatalf("heartbeat: %d lost, %v", n, err)
		}
	}
	for _, key := range []string{"gateway/gw1", "u0.gw1.c", "u99.gw1.c"} {
		if _, err := kv.Get(ctx, key); err != nil {
			t.Fatalf("%s after 1.5 TTL with heartbeats: %v", key, err)
		}
	}
	if err := r.Remove(ctx, "u0", "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "u0.gw1.c"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("removed entry: %v", err)
	}
	if r.Len() != 99 {
		t.Fatalf("registry holds %d sockets, want 99", r.Len())
	}
}

func TestPausedGatewayDoesNotResurrect(t *testing.T) {
	kv, _ := newBucket(t, 2*time.Second)
	ctx := context.Background()
	r := newRegistry(t, kv, "gw1")
	var lost atomic.Int32
	for _, u := range []string{"alice", "bob"} {
		if err := r.Add(ctx, u, "c", func() { lost.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := entry[chat.PresenceLease](t, kv, "gateway/gw1")

	// Paused: no heartbeat past the TTL. The lease expires; the next
	// heartbeat does not bring it back but reports both sockets lost.
	waitGone(t, kv, "gateway/gw1")
	if n, err := r.Heartbeat(ctx); err != nil || n != 2 || lost.Load() != 2 {
		t.Fatalf("heartbeat after expiry: %d lost (callbacks %d), %v", n, lost.Load(), err)
	}
	if _, err := kv.Get(ctx, "gateway/gw1"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("expired lease resurrected: %v", err)
	}
	if r.Len() != 0 {
		t.Fatalf("registry still holds %d sockets", r.Len())
	}
	if n, err := r.Heartbeat(ctx); err != nil || n != 0 {
		t.Fatalf("heartbeat without lease: %d lost, %v", n, err)
	}

	// The next socket starts a lease of a new epoch: the keys of the old
	// one (left for the presence service to delete) never count again.
	if err := r.Add(ctx, "alice", "c2", func() {}); err != nil {
		t.Fatal(err)
	}
	now, err := entry[chat.PresenceLease](t, kv, "gateway/gw1")
	if err != nil || now.Epoch == old.Epoch {
		t.Fatalf("lease after the loss = %+v (%v), old epoch %s", now, err, old.Epoch)
	}
	if s, _ := entry[chat.PresenceEntry](t, kv, "alice.gw1.c2"); s.Epoch != now.Epoch {
		t.Fatalf("new socket's epoch %q, lease's %q", s.Epoch, now.Epoch)
	}
}

func TestRefreshWithLostAnswerKeepsTheLease(t *testing.T) {
	kv, _ := newBucket(t, 10*time.Second)
	ctx := context.Background()
	r := newRegistry(t, kv, "gw1")
	if err := r.Add(ctx, "alice", "c", func() { t.Error("alice lost") }); err != nil {
		t.Fatal(err)
	}
	// A refresh stored whose answer never came back (a timeout): the
	// registry's revision is behind the bucket's.
	e, err := kv.Get(ctx, "gateway/gw1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, "gateway/gw1", e.Value(), e.Revision()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if n, err := r.Heartbeat(ctx); err != nil || n != 0 {
			t.Fatalf("heartbeat after a refresh with a lost answer: %d lost, %v", n, err)
		}
	}
	if r.Len() != 1 {
		t.Fatalf("registry holds %d sockets, want 1", r.Len())
	}
}

func TestHeartbeatAcrossNATSRestart(t *testing.T) {
	kv, ns := newBucket(t, 30*time.Second)
	ctx := context.Background()
	r := newRegistry(t, kv, "gw1")
	if err := r.Add(ctx, "alice", "c", func() { t.Error("alice lost") }); err != nil {
		t.Fatal(err)
	}
	// An outage shorter than the TTL: heartbeats fail while it lasts,
	// then go on from the same lease; nothing is lost.
	ns.Stop()
	hctx, cancel := context.WithTimeout(ctx, time.Second)
	if _, err := r.Heartbeat(hctx); err == nil {
		t.Error("heartbeat with NATS down succeeded")
	}
	cancel()
	ns.Restart(t)
	poll.Until(t, 20*time.Second, func() error {
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		n, err := r.Heartbeat(hctx)
		if n != 0 {
			t.Fatalf("%d sockets lost across a short outage", n)
		}
		return err
	})
	if _, err := kv.Get(ctx, "alice.gw1.c"); err != nil {
		t.Fatalf("socket entry after the outage: %v", err)
	}
}

// A socket closed while NATS is away cannot delete its key then; since a
// socket key never expires while the lease holds, the next heartbeat
// deletes it, or the user would stay online for good.
func TestRemoveDuringOutageDeletedAtNextHeartbeat(t *testing.T) {
	kv, ns := newBucket(t, 30*time.Second)
	ctx := context.Background()
	r := newRegistry(t, kv, "gw1")
	for _, c := range []string{"c1", "c2"} {
		if err := r.Add(ctx, "bob", c, func() { t.Error("bob lost") }); err != nil {
			t.Fatal(err)
		}
	}
	ns.Stop()
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	if err := r.Remove(rctx, "bob", "c1"); err == nil {
		t.Error("remove with NATS down succeeded")
	}
	cancel()
	ns.Restart(t)
	heartbeatUntilAnswered(t, r)
	waitGone(t, kv, "bob.gw1.c1")
	if _, err := kv.Get(ctx, "bob.gw1.c2"); err != nil {
		t.Fatalf("the open socket's entry: %v", err)
	}
}

// TestLeaseGivenUpWithoutAnswers: a gateway cut off from NATS with its
// connection left open (a partition) hears no answer to its refreshes;
// after LostAfter TTLs without one it gives its sockets up, at once,
// rather than keep them until contact returns (they would then take the
// live messages after the cut and skip, on resume, those sent during it).
func TestLeaseGivenUpWithoutAnswers(t *testing.T) {
	const ttl = 2 * time.Second
	kv, ns := newBucket(t, ttl)
	ctx := context.Background()
	r := newRegistry(t, kv, "gw1")
	lost := make(chan struct{}, 1)
	// The lease's last answer comes during Add: its start is the latest
	// time the test knows to be no later than that answer.
	confirmed := time.Now()
	if err := r.Add(ctx, "alice", "c", func() { lost <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	ns.Stop()
	var n int
	var err error
	poll.Until(t, LostAfter*ttl+10*time.Second, func() error {
		hctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		n, err = r.Heartbeat(hctx)
		if n == 0 {
			return fmt.Errorf("heartbeat: %v, no socket given up", err)
		}
		return nil
	})
	if n != 1 || len(lost) != 1 {
		t.Fatalf("%d sockets given up, onLost called %d times; want 1 and 1", n, len(lost))
	}
	if !errors.Is(err, ErrNoAnswers) {
		t.Fatalf("giving up said %v, want ErrNoAnswers (the gateway reconnects on it)", err)
	}
	if since := time.Since(confirmed); since < LostAfter*ttl {
		t.Fatalf("given up %s after the lease was written, before %d TTLs", since, LostAfter)
	}
}

// TestAddDuringOutageWrittenAtNextHeartbeat: with the gateway's lease
// held, a socket whose entry cannot be written (the bucket without a
// leader for a while after a node failed) is admitted, and its entry is
// written by the first heartbeat that can; one closed before that
// leaves no entry behind.
func TestAddDuringOutageWrittenAtNextHeartbeat(t *testing.T) {
	kv, ns := newBucket(t, 30*time.Second)
	ctx := context.Background()
	r := newRegistry(t, kv, "gw1")
	if err := r.Add(ctx, "ann", "c0", func() { t.Error("ann lost") }); err != nil {
		t.Fatal(err)
	}
	ns.Stop()
	for _, c := range []string{"c1", "c2"} {
		actx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := r.Add(actx, "bob", c, func() { t.Error("bob lost") })
		cancel()
		if err != nil {
			t.Fatalf("add %s with the bucket unreachable and the lease held: %v", c, err)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_ = r.Remove(rctx, "bob", "c2")
	cancel()
	ns.Restart(t)
	heartbeatUntilAnswered(t, r)
	e, err := entry[chat.PresenceEntry](t, kv, "bob.gw1.c1")
	if err != nil || e.User != "bob" || e.Conn != "c1" {
		t.Fatalf("the socket admitted during the outage: entry %+v, %v", e, err)
	}
	if _, err := kv.Get(ctx, "bob.gw1.c2"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the socket closed during the outage has an entry (%v)", err)
	}
	if err := r.Remove(ctx, "bob", "c1"); err != nil {
		t.Fatal(err)
	}
	waitGone(t, kv, "bob.gw1.c1")
}

// TestGivenUpDespiteStaleKeys: sockets that close while NATS is
// unreachable leave keys to delete; those deletes (each waiting out its
// own timeout) must not keep the heartbeat from refreshing the lease, or,
// as here, from giving it up. With the deletes first, each heartbeat
// spent 5 s per closed socket before the lease (20 s here).
func TestGivenUpDespiteStaleKeys(t *testing.T) {
	const ttl = 2 * time.Second
	kv, ns := newBucket(t, ttl)
	ctx := context.Background()
	r := newRegistry(t, kv, "gw1")
	for i := range 5 {
		if err := r.Add(ctx, "bob", fmt.Sprint("c", i), func() {}); err != nil {
			t.Fatal(err)
		}
	}
	ns.Stop()
	for i := range 4 {
		rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		_ = r.Remove(rctx, "bob", fmt.Sprint("c", i))
		cancel()
	}
	// Heartbeats as the gateway runs them: no deadline of their own. One
	// call can outlast the poll's bound, so the time is checked as well.
	start := time.Now()
	bound := LostAfter*ttl + 10*time.Second
	poll.Until(t, bound, func() error {
		n, err := r.Heartbeat(ctx)
		if n == 0 {
			return fmt.Errorf("heartbeat: %v, lease not given up", err)
		}
		return nil
	})
	if took := time.Since(start); took > bound {
		t.Fatalf("lease given up %s after NATS went, want within %s", took, bound)
	}
}
