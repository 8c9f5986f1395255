package main

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
)

// tracker is who is online, derived from the presence bucket alone: one
// key per live socket (<user>.<gateway>.<conn>). Every replica reads the
// same ordered stream of updates and so derives the same state, and the
// same changes at the same bucket revisions while it keeps up. The bucket
// keeps one revision per key, so a watch that is behind may not see every
// revision: a socket that left (or expired) before its join was read is
// known only by its delete, which changes nothing; a socket whose join was
// overwritten by a heartbeat first appears at the heartbeat's revision.
type tracker struct {
	mu      sync.RWMutex
	sockets map[string]chat.PresenceEntry // by key
	users   map[string]*userState
	rev     uint64 // last bucket revision applied
}

type userState struct {
	keys  map[string]struct{}
	since time.Time
}

func newTracker() *tracker {
	return &tracker{sockets: map[string]chat.PresenceEntry{}, users: map[string]*userState{}}
}

// change is a user coming online or going offline at a revision.
type change struct {
	user    string
	online  bool
	rev     uint64
	expired bool // the last socket's entry expired (no goodbye)
}

// apply takes one bucket update and returns the change it makes, if any.
func (t *tracker) apply(e jetstream.KeyValueEntry) (change, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.Revision() > t.rev {
		t.rev = e.Revision()
	}
	key := e.Key()
	user, _, ok := strings.Cut(key, ".")
	if !ok || chat.ValidID(user) != nil {
		return change{}, false
	}
	if e.Operation() == jetstream.KeyValuePut {
		if _, known := t.sockets[key]; known {
			return change{}, false // a heartbeat
		}
		var entry chat.PresenceEntry
		if json.Unmarshal(e.Value(), &entry) != nil || entry.Since.IsZero() {
			entry.Since = e.Created()
		}
		entry.User = user
		t.sockets[key] = entry
		u := t.users[user]
		if u == nil {
			u = &userState{keys: map[string]struct{}{}, since: entry.Since}
			t.users[user] = u
		}
		u.keys[key] = struct{}{}
		return change{user: user, online: true, rev: e.Revision()}, len(u.keys) == 1
	}
	// Delete (a goodbye) or purge (the entry expired: no heartbeat).
	if _, known := t.sockets[key]; !known {
		// A socket this replica never saw join (its put was replaced by
		// this marker before the watch read it): nothing changed here.
		return change{}, false
	}
	delete(t.sockets, key)
	u := t.users[user]
	delete(u.keys, key)
	if len(u.keys) > 0 {
		return change{}, false
	}
	delete(t.users, user)
	return change{user: user, online: false, rev: e.Revision(), expired: e.Operation() == jetstream.KeyValuePurge}, true
}

// online lists everyone online, ordered by id, with the revision it is
// as of; names are filled by the caller.
func (t *tracker) online() ([]chat.OnlineUser, uint64) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]chat.OnlineUser, 0, len(t.users))
	for id, u := range t.users {
		out = append(out, chat.OnlineUser{User: chat.User{ID: id}, Since: u.since, Sockets: len(u.keys)})
	}
	slices.SortFunc(out, func(a, b chat.OnlineUser) int { return strings.Compare(a.ID, b.ID) })
	return out, t.rev
}

// user is one user's state.
func (t *tracker) user(id string) (bool, time.Time, int) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	u := t.users[id]
	if u == nil {
		return false, time.Time{}, 0
	}
	return true, u.since, len(u.keys)
}

// counts are users and sockets online.
func (t *tracker) counts() (int, int) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.users), len(t.sockets)
}
