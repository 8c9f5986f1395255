package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/ops"
	"github.com/natter/natter/services/token"
)

// revocations is what the revoked bucket holds, kept from a watch of it,
// so a handshake checks a token without a NATS round trip: revoked token
// ids (logout), and per user the second up to which every token of theirs
// is revoked (log out everywhere, password change: see chat.Revocation).
// A new revocation also closes the sockets it covers (as auth.revoked
// does, see hub.onRevoked), and a socket checks the set again once
// registered with the hub: a revocation that lands during a handshake
// either is in the set by that check or finds the socket registered.
type revocations struct {
	log   *slog.Logger
	mu    sync.RWMutex
	ids   map[string]struct{}
	users map[string]time.Time // user id -> chat.Revocation.IssuedThrough
}

// revokes reports whether the token of c is revoked: by its id, or by a
// revocation of every token of its user issued up to its iat or later.
func (r *revocations) revokes(c *token.Claims) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if _, ok := r.ids[c.ID]; ok {
		return true
	}
	through, ok := r.users[c.Subject]
	return ok && chat.Revocation{IssuedThrough: through}.RevokesIssuedAt(issuedAt(c))
}

// issuedAt is a token's iat; a token without one counts as issued at the
// zero time, before any revocation of its user.
func issuedAt(c *token.Claims) time.Time {
	if c.IssuedAt == nil {
		return time.Time{}
	}
	return c.IssuedAt.Time
}

// watchRevocations loads the revoked bucket, then keeps the set current
// until ctx ends, calling revoked with the key of each revocation that is
// new from then on: a token id, or a user's key (chat.RevokedUserKey)
// whose revocation now covers more tokens; the set holds it by then.
// Entries leave the set when their key expires with the tokens (a marker
// deletes it).
func watchRevocations(ctx context.Context, log *slog.Logger, kv jetstream.KeyValue, revoked func(key string)) (*revocations, error) {
	r := &revocations{log: log, ids: map[string]struct{}{}, users: map[string]time.Time{}}
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
func (r *revocations) load(ctx context.Context, kv jetstream.KeyValue, revoked func(key string)) (jetstream.KeyWatcher, error) {
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
func (r *revocations) follow(ctx context.Context, w jetstream.KeyWatcher, revoked func(key string)) {
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

// apply records one update; true for a token not known revoked before,
// or a user's revocation that covers tokens it did not before.
func (r *revocations) apply(e jetstream.KeyValueEntry) bool {
	if user, ok := chat.RevokedKeyUser(e.Key()); ok {
		return r.applyUser(user, e)
	}
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

// applyUser records an update of user's revocation of every token issued
// up to a second. One that cannot be read is logged and left out: auth
// writes none such, and guessing a time could revoke too little or too
// much.
func (r *revocations) applyUser(user string, e jetstream.KeyValueEntry) bool {
	if e.Operation() != jetstream.KeyValuePut {
		r.mu.Lock()
		delete(r.users, user)
		r.mu.Unlock()
		return false
	}
	var rev chat.Revocation
	if err := json.Unmarshal(e.Value(), &rev); err != nil || rev.IssuedThrough.IsZero() {
		r.log.Warn("unreadable user revocation ignored", "key", e.Key(), "err", err)
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old, known := r.users[user]
	r.users[user] = rev.IssuedThrough
	return !known || rev.IssuedThrough.After(old)
}
