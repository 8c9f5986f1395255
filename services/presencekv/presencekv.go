// Package presencekv keeps a gateway's live sockets in the presence
// bucket: one key per socket, created on connect, refreshed by heartbeat,
// deleted on disconnect. A gateway that dies simply stops heartbeating and
// its keys expire (the bucket's TTL). Heartbeats compare and set on each
// key's revision, so an entry that already expired (a gateway paused past
// the TTL) is never brought back: its socket is reported lost instead.
package presencekv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
)

// Registry is one gateway's sockets in the bucket.
type Registry struct {
	kv      jetstream.KeyValue
	gateway string

	mu    sync.Mutex
	socks map[string]*sock // by key
}

type sock struct {
	rev    uint64
	value  []byte
	onLost func()
}

// New returns the registry of gateway (a chat.ValidID) in kv.
func New(kv jetstream.KeyValue, gateway string) (*Registry, error) {
	if err := chat.ValidID(gateway); err != nil {
		return nil, fmt.Errorf("gateway id: %w", err)
	}
	return &Registry{kv: kv, gateway: gateway, socks: map[string]*sock{}}, nil
}

// Add announces a socket of user; onLost is called (once) if a heartbeat
// finds its entry expired.
func (r *Registry) Add(ctx context.Context, user, conn string, onLost func()) error {
	key, err := chat.PresenceKey(user, r.gateway, conn)
	if err != nil {
		return err
	}
	value, _ := json.Marshal(chat.PresenceEntry{User: user, Gateway: r.gateway, Conn: conn, Since: time.Now().UTC()})
	rev, err := r.kv.Create(ctx, key, value)
	if err != nil {
		return fmt.Errorf("presence add: %w", err)
	}
	r.mu.Lock()
	r.socks[key] = &sock{rev: rev, value: value, onLost: onLost}
	r.mu.Unlock()
	return nil
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
	r.mu.Unlock()
	if !ok {
		return nil
	}
	if err := r.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("presence remove: %w", err)
	}
	return nil
}

// Heartbeat refreshes every socket's entry. Entries gone from the bucket
// (expired) are dropped and their onLost called. It returns how many were
// lost, and stops at the first other error (NATS unreachable): the next
// heartbeat tries again, and entries that expire meanwhile are lost then.
func (r *Registry) Heartbeat(ctx context.Context) (int, error) {
	r.mu.Lock()
	keys := make([]string, 0, len(r.socks))
	for k := range r.socks {
		keys = append(keys, k)
	}
	r.mu.Unlock()
	lost := 0
	for _, key := range keys {
		r.mu.Lock()
		s, ok := r.socks[key]
		r.mu.Unlock()
		if !ok {
			continue // removed meanwhile
		}
		rev, err := r.kv.Update(ctx, key, s.value, s.rev)
		switch {
		case err == nil:
			r.mu.Lock()
			s.rev = rev
			r.mu.Unlock()
		case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyNotFound):
			// The entry expired (or was removed): do not resurrect it.
			r.mu.Lock()
			_, still := r.socks[key]
			delete(r.socks, key)
			r.mu.Unlock()
			if still {
				lost++
				s.onLost()
			}
		default:
			return lost, fmt.Errorf("presence heartbeat: %w", err)
		}
	}
	return lost, nil
}

// Len is the number of sockets registered.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.socks)
}
