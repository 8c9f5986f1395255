// Package presencekv keeps a gateway's live sockets in the presence
// bucket at the cost of one write per gateway per heartbeat, whatever
// its number of sockets.
//
// The bucket holds two kinds of key:
//
//   - gateway/<gateway>: the gateway's lease (chat.PresenceLease), created
//     with its first socket and refreshed every heartbeat. Without refresh
//     it expires after the bucket's TTL (PRESENCE_TTL).
//   - <user>.<gateway>.<conn>: one per socket (chat.PresenceEntry), written
//     once when the socket opens, with a per-key TTL of "never", and
//     deleted when it closes. It is never refreshed.
//
// A socket is online while its gateway's lease holds the epoch its entry
// names (the presence service's tracker applies the rule). A gateway that
// dies, whatever the way, stops refreshing: its lease expires within TTL,
// so its users go offline within TTL + one heartbeat unless they have a
// socket elsewhere, and the presence service deletes its socket keys.
//
// Refreshes compare and set on the lease's revision, so a lease that
// expired (a gateway paused past TTL, or cut off from NATS that long) is
// never brought back: the next heartbeat reports every socket of that
// lease lost (the gateway closes them, and their clients reconnect), and
// the next socket creates a lease with a new epoch, under which the old
// sockets' keys never count again. A refresh whose answer was lost (a
// timeout) may have been stored all the same, so a failed compare is
// checked against the lease's current value before its sockets are given
// up: one lost answer must not close every socket of the gateway.
package presencekv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
)

// ErrLeaseLost reports a socket added under a lease that expired
// meanwhile: it is not online; the client should reconnect.
var ErrLeaseLost = errors.New("presence lease lost")

// Registry is one gateway's lease and sockets in the bucket.
type Registry struct {
	kv       jetstream.KeyValue
	js       jetstream.JetStream
	gateway  string
	leaseKey string
	prefix   string // subject prefix of the bucket's keys

	create sync.Mutex // one lease creation at a time

	mu    sync.Mutex
	ttl   time.Duration       // the bucket's, learned with the first lease
	lease *lease              // nil until the first socket, and after a loss
	socks map[string]*sock    // by key
	stale map[string]struct{} // keys of closed sockets whose delete failed
	// unwritten: entries of open sockets whose write failed, by key,
	// written by the next heartbeats.
	unwritten map[string][]byte
}

// lease is one epoch of the gateway's lease.
type lease struct {
	epoch string
	value []byte
	rev   uint64 // guarded by Registry.mu
	// confirmed is when the last write of the lease known to be stored
	// (creation, refresh) was answered; guarded by Registry.mu.
	confirmed time.Time
}

type sock struct {
	epoch  string
	onLost func()
}

// New returns the registry of gateway (a chat.ValidID) in kv.
func New(kv *chat.PresenceKV, gateway string) (*Registry, error) {
	leaseKey, err := chat.PresenceGatewayKey(gateway)
	if err != nil {
		return nil, fmt.Errorf("gateway id: %w", err)
	}
	return &Registry{
		kv: kv, js: kv.JetStream(), gateway: gateway, leaseKey: leaseKey,
		prefix: "$KV." + kv.Bucket() + ".", socks: map[string]*sock{}, stale: map[string]struct{}{},
		unwritten: map[string][]byte{},
	}, nil
}

// Add announces a socket of user; onLost is called (once) if a heartbeat
// finds the gateway's lease expired. Once the gateway holds a lease, a
// socket whose entry cannot be written now (the bucket electing a leader
// after a NATS node failed: 4 to 9 s) is admitted all the same and its
// entry written by the heartbeats: refused, every such failure became a
// reconnect storm whose backoff kept clients away for 15-22 s.
func (r *Registry) Add(ctx context.Context, user, conn string, onLost func()) error {
	key, err := chat.PresenceKey(user, r.gateway, conn)
	if err != nil {
		return err
	}
	l, err := r.ensureLease(ctx)
	if err != nil {
		return err
	}
	value, _ := json.Marshal(chat.PresenceEntry{User: user, Gateway: r.gateway, Conn: conn, Since: time.Now().UTC(), Epoch: l.epoch})
	putErr := r.putSocket(ctx, key, value)
	r.mu.Lock()
	current := r.lease == l
	if current {
		r.socks[key] = &sock{epoch: l.epoch, onLost: onLost}
		if putErr != nil {
			r.unwritten[key] = value
		}
	}
	r.mu.Unlock()
	if !current && putErr != nil {
		return fmt.Errorf("presence add: %w", putErr)
	}
	if !current {
		// The heartbeat found the lease expired while this socket was
		// being written: it counts nowhere, and its key is garbage.
		_ = r.kv.Delete(ctx, key)
		return fmt.Errorf("presence add: %w", ErrLeaseLost)
	}
	return nil
}

// putSocket stores a socket's entry with a per-key TTL of "never": the
// bucket's TTL is for leases; a socket lives by its gateway's lease.
func (r *Registry) putSocket(ctx context.Context, key string, value []byte) error {
	m := nats.NewMsg(r.prefix + key)
	m.Data = value
	m.Header.Set(jetstream.MsgTTLHeader, "never")
	_, err := r.js.PublishMsg(ctx, m)
	return err
}

// ensureLease returns the current lease, creating one if there is none.
func (r *Registry) ensureLease(ctx context.Context) (*lease, error) {
	if l := r.current(); l != nil {
		return l, nil
	}
	r.create.Lock()
	defer r.create.Unlock()
	if l := r.current(); l != nil {
		return l, nil // created while this one waited
	}
	l, err := r.newLease(ctx)
	if err != nil {
		return nil, fmt.Errorf("presence lease: %w", err)
	}
	var ttl time.Duration
	if st, err := r.kv.Status(ctx); err == nil {
		ttl = st.TTL()
	}
	r.mu.Lock()
	r.lease = l
	if ttl > 0 {
		r.ttl = ttl
	}
	r.mu.Unlock()
	return l, nil
}

func (r *Registry) current() *lease {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lease
}

// newLease creates the lease key with a new epoch. A live lease already
// there can only be this gateway's own (gateway ids are unique), from a
// creation whose answer was lost: it is adopted, since no socket names
// its epoch yet.
func (r *Registry) newLease(ctx context.Context) (*lease, error) {
	epoch := newEpoch()
	value, _ := json.Marshal(chat.PresenceLease{Gateway: r.gateway, Epoch: epoch, Since: time.Now().UTC()})
	rev, err := r.kv.Create(ctx, r.leaseKey, value)
	if err == nil {
		return &lease{epoch: epoch, value: value, rev: rev, confirmed: time.Now()}, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, err
	}
	e, err := r.kv.Get(ctx, r.leaseKey)
	if err != nil {
		return nil, err
	}
	var l chat.PresenceLease
	if json.Unmarshal(e.Value(), &l) != nil || l.Gateway != r.gateway || l.Epoch == "" {
		return nil, fmt.Errorf("lease key %s holds %q", r.leaseKey, e.Value())
	}
	return &lease{epoch: l.Epoch, value: e.Value(), rev: e.Revision(), confirmed: time.Now()}, nil
}

// Remove withdraws a socket.
func (r *Registry) Remove(ctx context.Context, user, conn string) error {
	key, err := chat.PresenceKey(user, r.gateway, conn)
	if err != nil {
		return err
	}
	r.mu.Lock()
	_, ok := r.socks[key]
	delete(r.socks, key)
	delete(r.unwritten, key) // deleted all the same: a failed write may have been stored
	r.mu.Unlock()
	if !ok {
		return nil
	}
	if err := r.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		// A socket key never expires while the lease holds: deleted at
		// the next heartbeat instead, or it would count for good.
		r.mu.Lock()
		r.stale[key] = struct{}{}
		r.mu.Unlock()
		return fmt.Errorf("presence remove (retried at the next heartbeat): %w", err)
	}
	return nil
}

// deleteStale deletes the keys of closed sockets whose delete failed.
func (r *Registry) deleteStale(ctx context.Context) {
	r.mu.Lock()
	keys := make([]string, 0, len(r.stale))
	for k := range r.stale {
		keys = append(keys, k)
	}
	r.mu.Unlock()
	for _, k := range keys {
		if err := r.kv.Delete(ctx, k); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return // NATS unreachable: the rest waits too
		}
		r.mu.Lock()
		delete(r.stale, k)
		r.mu.Unlock()
	}
}

// Heartbeat refreshes the gateway's lease: one write, whatever the number
// of sockets. If the lease expired, every socket under it is dropped and
// its onLost called; Heartbeat returns how many (with ErrNoAnswers when
// it was given up for lack of answers). Other errors (NATS
// unreachable) are returned: the next heartbeat tries again, and if the
// lease expires meanwhile its sockets are lost then, or, once no refresh
// has been answered for LostAfter TTLs, at once (see giveUp).
//
// The lease comes first: deleting the keys of closed sockets, one request
// each, while NATS was unreachable kept a heartbeat from ever refreshing
// the lease or giving it up (the fault suite's partition: a minute).
func (r *Registry) Heartbeat(ctx context.Context) (int, error) {
	l := r.current()
	if l == nil {
		r.deleteStale(ctx)
		return 0, nil // no socket yet, or none since the last loss
	}
	r.mu.Lock()
	rev := l.rev
	r.mu.Unlock()
	rev, err := r.kv.Update(ctx, r.leaseKey, l.value, rev)
	if revisionMismatch(err) {
		rev, err = r.recheck(ctx, l)
	}
	switch {
	case errors.Is(err, ErrLeaseLost):
		return r.lost(l), nil
	case err != nil && r.giveUp(l, time.Now()):
		return r.lost(l), fmt.Errorf("%w: %w", ErrNoAnswers, err)
	case err != nil:
		return 0, fmt.Errorf("presence heartbeat: %w", err)
	}
	r.mu.Lock()
	l.rev, l.confirmed = rev, time.Now()
	r.mu.Unlock()
	r.deleteStale(ctx)
	if err := r.writeUnwritten(ctx); err != nil {
		return 0, fmt.Errorf("presence add (retried at the next heartbeat): %w", err)
	}
	return 0, nil
}

// writeUnwritten writes the entries of open sockets whose write failed
// (see Add). A socket closed while its entry was being written has its
// key deleted again, or it would count until the lease ends.
func (r *Registry) writeUnwritten(ctx context.Context) error {
	r.mu.Lock()
	todo := make(map[string][]byte, len(r.unwritten))
	for k, v := range r.unwritten {
		todo[k] = v
	}
	r.mu.Unlock()
	for key, value := range todo {
		err := r.putSocket(ctx, key, value)
		r.mu.Lock()
		_, open := r.socks[key]
		if err == nil {
			delete(r.unwritten, key)
		}
		if !open {
			// Closed meanwhile; a failed write may have been stored too.
			r.stale[key] = struct{}{}
		}
		r.mu.Unlock()
		if err != nil {
			return fmt.Errorf("entry %s not written: %w", key, err) // the rest at the next heartbeat
		}
		if !open {
			r.deleteStale(ctx)
		}
	}
	return nil
}

// ErrNoAnswers: the lease was given up after LostAfter TTLs without an
// answered refresh (see giveUp); the gateway's NATS connection, open as
// it may look, reaches no one.
var ErrNoAnswers = errors.New("no presence refresh answered for the lease's lifetime")

// LostAfter is how many TTLs a lease may go without a refresh answered
// before the gateway gives it up (see giveUp).
const LostAfter = 2

// giveUp reports whether lease l has gone LostAfter TTLs without a
// refresh answered. It has expired then, unless a refresh whose answer
// was lost was stored; and a gateway that long without an answer has
// lost contact with NATS (a partition that leaves its connection open):
// its sockets are given up at once, closed with the code that says so,
// rather than when contact returns. Kept open, they would take the live
// messages that follow the return and skip, when they resume, the ones
// sent while the gateway was cut off, which never reached it.
func (r *Registry) giveUp(l *lease, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ttl > 0 && now.Sub(l.confirmed) > LostAfter*r.ttl
}

// recheck follows a refresh that found another revision than the last
// one it knew: if the lease still holds this epoch (an earlier refresh
// was stored though its answer was lost), it is refreshed from there;
// if it is gone, the lease is lost.
func (r *Registry) recheck(ctx context.Context, l *lease) (uint64, error) {
	e, err := r.kv.Get(ctx, r.leaseKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, ErrLeaseLost
	case err != nil:
		return 0, err
	case !bytes.Equal(e.Value(), l.value):
		return 0, ErrLeaseLost
	}
	rev, err := r.kv.Update(ctx, r.leaseKey, l.value, e.Revision())
	if revisionMismatch(err) {
		return 0, ErrLeaseLost // expired between the read and the write
	}
	return rev, err // confirmed by the caller
}

// revisionMismatch is an update that found another revision than the one
// it named (10071 on one node, 10164 on a replicated bucket).
func revisionMismatch(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		errors.Is(err, jetstream.ErrKeyNotFound)
}

// lost drops lease l and its sockets, calls their onLost, and returns
// how many there were. The next socket creates a lease with a new epoch.
func (r *Registry) lost(l *lease) int {
	var lost []func()
	r.mu.Lock()
	if r.lease == l {
		r.lease = nil
	}
	for key, s := range r.socks {
		if s.epoch == l.epoch {
			lost = append(lost, s.onLost)
			delete(r.socks, key)
			delete(r.unwritten, key)
		}
	}
	r.mu.Unlock()
	for _, f := range lost {
		f()
	}
	return len(lost)
}

// Len is the number of sockets registered.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.socks)
}

// newEpoch names a lease: 72 random bits, so no two leases share one.
func newEpoch() string {
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
