package bridge

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
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
	// During the first load there are no sockets to close; after it, a
	// revocation the set did not know (new, or made while a watch was
	// down, its auth.revoked maybe lost with it) closes its sockets.
	err := watchKV(ctx, log, kv, jetstream.AllKeys, chat.RevokedBucket, func(e jetstream.KeyValueEntry, first bool) {
		if r.apply(e) && !first {
			revoked(e.Key())
		}
	})
	if err != nil {
		return nil, err
	}
	return r, nil
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
