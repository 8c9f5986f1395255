package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/ops"
)

// revocations is the set of revoked token ids, kept from a watch of the
// revoked bucket, so a handshake checks a token without a NATS round
// trip. A newly revoked token also closes the sockets opened with it (as
// auth.revoked does, see hub.onRevoked), and a socket checks the set
// again once registered with the hub: a revocation that lands during a
// handshake either is in the set by that check or finds the socket
// registered.
type revocations struct {
	mu  sync.RWMutex
	ids map[string]struct{}
}

func (r *revocations) has(id string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.ids[id]
	return ok
}

// watchRevocations loads the revoked bucket, then keeps the set current
// until ctx ends, calling revoked for each token revoked from then on.
// Entries leave the set when their key expires with the token (a marker
// deletes it).
func watchRevocations(ctx context.Context, log *slog.Logger, kv jetstream.KeyValue, revoked func(id string)) (*revocations, error) {
	r := &revocations{ids: map[string]struct{}{}}
	w, err := r.load(ctx, kv, func(string) {}) // no sockets yet
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			r.follow(ctx, w, revoked)
			if ctx.Err() != nil {
				return
			}
			// The client library's watch outlives reconnects; should it
			// end anyway, a new one reloads the bucket (anything revoked
			// meanwhile is in it).
			log.Warn("revocation watch ended; watching again")
			for w = nil; w == nil; {
				select {
				case <-ctx.Done():
					return
				case <-time.After(ops.SetupRetry):
				}
				if w, err = r.load(ctx, kv, revoked); err != nil {
					log.Warn("revocation watch failed", "err", err)
				}
			}
		}
	}()
	return r, nil
}

// load starts a watch and applies the bucket's current state from it,
// calling revoked for tokens it did not know (revoked while a previous
// watch was down: their auth.revoked may have been lost with it).
func (r *revocations) load(ctx context.Context, kv jetstream.KeyValue, revoked func(id string)) (jetstream.KeyWatcher, error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", chat.RevokedBucket, err)
	}
	for {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return nil, errors.New("revocation watch ended while loading")
			case e == nil:
				return w, nil
			default:
				if r.apply(e) {
					revoked(e.Key())
				}
			}
		}
	}
}

// follow applies w's updates until it or ctx ends.
func (r *revocations) follow(ctx context.Context, w jetstream.KeyWatcher, revoked func(id string)) {
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e != nil && r.apply(e) {
				revoked(e.Key())
			}
		}
	}
}

// apply records one update; true for a token not known revoked before.
func (r *revocations) apply(e jetstream.KeyValueEntry) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Operation() == jetstream.KeyValuePut {
		_, known := r.ids[e.Key()]
		r.ids[e.Key()] = struct{}{}
		return !known
	}
	delete(r.ids, e.Key())
	return false
}
