package main

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
)

// tracker is who is online, derived from the presence bucket alone (see
// services/presencekv for what gateways write there):
//
//   - gateway/<gateway>: a gateway's lease, naming its current epoch;
//     refreshed every heartbeat, expired when the gateway stops;
//   - <user>.<gateway>.<conn>: one socket, written once, naming the epoch
//     of the lease it was written under.
//
// A socket is live while its gateway's lease holds the socket's epoch. A
// socket whose lease this replica has not seen (yet) is pending: it counts
// nowhere until a lease of its epoch arrives, and is dead if none does
// within the grace period. A lease that expires (or changes epoch) kills
// its sockets: their users go offline unless they have a live socket
// elsewhere, and their keys are queued for deletion (nobody else removes
// a dead gateway's keys). Sockets without an epoch are from gateways
// before leases: live from their put, gone at their delete or expiry.
//
// Every replica reads the same ordered stream of updates and so derives
// the same state, and the same changes at the same bucket revisions while
// it keeps up. The bucket keeps one revision per key, so a watch that is
// behind may not see every revision: a socket that left before its join
// was read is known only by its delete, which changes nothing; a lease
// whose creation was overwritten by a refresh first appears at the
// refresh, and its sockets come online there.
type tracker struct {
	mu       sync.RWMutex
	now      func() time.Time
	grace    time.Duration            // how long a socket may wait for its lease
	sockets  map[string]*socket       // by key: every socket key known, live or pending
	gateways map[string]*gatewayState // by gateway id
	users    map[string]*userState    // users with a live socket
	dead     map[string]uint64        // socket keys to delete, with their revision
	live     int                      // live sockets
	rev      uint64                   // last bucket revision applied
}

type socket struct {
	key     string
	user    string
	gateway string
	epoch   string // "" for sockets refreshed on their own (no lease)
	since   time.Time
	rev     uint64
	live    bool
	pending time.Time // when it began waiting for its lease
}

// gatewayState is a gateway's lease as last seen, and its sockets.
type gatewayState struct {
	epoch   string // of its live lease; "" while none is known
	sockets map[string]*socket
}

type userState struct {
	keys  map[string]struct{}
	since time.Time
}

func newTracker(grace time.Duration) *tracker {
	return &tracker{
		now: time.Now, grace: grace,
		sockets: map[string]*socket{}, gateways: map[string]*gatewayState{},
		users: map[string]*userState{}, dead: map[string]uint64{},
	}
}

// reset forgets everything, for a watch that starts again from the
// bucket's current state.
func (t *tracker) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	fresh := newTracker(t.grace)
	t.sockets, t.gateways, t.users, t.dead, t.rev = fresh.sockets, fresh.gateways, fresh.users, fresh.dead, 0
}

// change is a user coming online or going offline at a revision.
type change struct {
	user    string
	online  bool
	rev     uint64
	expired bool // the last socket's lease (or entry) expired: no goodbye
}

// apply takes one bucket update and returns the changes it makes, by
// user id: a lease's expiry (or a new epoch) changes several users at
// the same revision.
func (t *tracker) apply(e jetstream.KeyValueEntry) []change {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := t.applyLocked(e)
	slices.SortFunc(out, func(a, b change) int { return strings.Compare(a.user, b.user) })
	return out
}

func (t *tracker) applyLocked(e jetstream.KeyValueEntry) []change {
	t.rev = max(t.rev, e.Revision())
	key := e.Key()
	put := e.Operation() == jetstream.KeyValuePut
	if id, ok := strings.CutPrefix(key, chat.PresenceGatewayPrefix); ok {
		if chat.ValidID(id) != nil {
			return nil
		}
		if put {
			return t.leasePut(id, e)
		}
		return t.leaseGone(id, e.Revision(), e.Operation() == jetstream.KeyValuePurge)
	}
	if put {
		return t.socketPut(key, e)
	}
	delete(t.dead, key) // deleted: by its gateway, another replica, or expiry
	s := t.sockets[key]
	if s == nil {
		// A socket this replica never saw join (its put was replaced by
		// this marker before the watch read it): nothing changed here.
		return nil
	}
	return t.remove(nil, s, e.Revision(), e.Operation() == jetstream.KeyValuePurge)
}

// leasePut is a gateway's lease written: a refresh changes nothing; a new
// epoch brings its pending sockets online and kills the older epoch's.
func (t *tracker) leasePut(id string, e jetstream.KeyValueEntry) []change {
	var l chat.PresenceLease
	if json.Unmarshal(e.Value(), &l) != nil || l.Epoch == "" {
		return nil
	}
	g := t.gateway(id)
	if g.epoch == l.Epoch {
		return nil // a heartbeat
	}
	g.epoch = l.Epoch
	var out []change
	for _, s := range g.sockets {
		if s.epoch == l.Epoch {
			out = t.goLive(out, s, e.Revision())
		} else {
			out = t.kill(out, s, e.Revision(), false)
		}
	}
	return out
}

// leaseGone is a gateway's lease expired (purge) or withdrawn (delete):
// every socket it had is dead.
func (t *tracker) leaseGone(id string, rev uint64, expired bool) []change {
	g := t.gateways[id]
	if g == nil {
		return nil
	}
	var out []change
	for _, s := range g.sockets {
		out = t.kill(out, s, rev, expired)
	}
	delete(t.gateways, id)
	return out
}

// socketPut is a socket key written: new sockets join, live at once if
// their lease is known, pending otherwise.
func (t *tracker) socketPut(key string, e jetstream.KeyValueEntry) []change {
	if s := t.sockets[key]; s != nil {
		s.rev = e.Revision() // a refresh (sockets without a lease)
		return nil
	}
	user, rest, ok := strings.Cut(key, ".")
	gw, _, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || chat.ValidID(user) != nil || chat.ValidID(gw) != nil {
		return nil
	}
	var entry chat.PresenceEntry
	if json.Unmarshal(e.Value(), &entry) != nil || entry.Since.IsZero() {
		entry.Since = e.Created()
	}
	s := &socket{key: key, user: user, gateway: gw, epoch: entry.Epoch, since: entry.Since, rev: e.Revision()}
	t.sockets[key] = s
	if s.epoch == "" {
		return t.goLive(nil, s, e.Revision())
	}
	g := t.gateway(gw)
	g.sockets[key] = s
	if g.epoch == s.epoch {
		return t.goLive(nil, s, e.Revision())
	}
	s.pending = t.now()
	return nil
}

func (t *tracker) gateway(id string) *gatewayState {
	g := t.gateways[id]
	if g == nil {
		g = &gatewayState{sockets: map[string]*socket{}}
		t.gateways[id] = g
	}
	return g
}

// goLive makes s count; its user comes online if it is their first.
func (t *tracker) goLive(out []change, s *socket, rev uint64) []change {
	s.live, s.pending = true, time.Time{}
	t.live++
	u := t.users[s.user]
	if u == nil {
		u = &userState{keys: map[string]struct{}{}, since: s.since}
		t.users[s.user] = u
	}
	u.keys[s.key] = struct{}{}
	if len(u.keys) > 1 {
		return out
	}
	return append(out, change{user: s.user, online: true, rev: rev})
}

// kill forgets s, whose lease is gone, and queues its key for deletion.
func (t *tracker) kill(out []change, s *socket, rev uint64, expired bool) []change {
	t.dead[s.key] = s.rev
	return t.remove(out, s, rev, expired)
}

// remove forgets s; its user goes offline if it was their last live
// socket.
func (t *tracker) remove(out []change, s *socket, rev uint64, expired bool) []change {
	delete(t.sockets, s.key)
	if g := t.gateways[s.gateway]; g != nil {
		delete(g.sockets, s.key)
		if g.epoch == "" && len(g.sockets) == 0 {
			delete(t.gateways, s.gateway) // no lease known, nothing waits for one
		}
	}
	if !s.live {
		return out
	}
	s.live = false
	t.live--
	u := t.users[s.user]
	delete(u.keys, s.key)
	if len(u.keys) > 0 {
		return out
	}
	delete(t.users, s.user)
	return append(out, change{user: s.user, online: false, rev: rev, expired: expired})
}

// sweep kills sockets that waited for their lease longer than the grace
// period (their gateway died before this replica saw its lease), and
// returns every socket key to delete, with its revision.
func (t *tracker) sweep() map[string]uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range t.sockets {
		if !s.pending.IsZero() && t.now().Sub(s.pending) > t.grace {
			t.kill(nil, s, t.rev, true) // not live: no change
		}
	}
	return maps.Clone(t.dead)
}

// deleted notes that key is gone (or was replaced): it need not be
// deleted again.
func (t *tracker) deleted(key string, rev uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead[key] == rev {
		delete(t.dead, key)
	}
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

// counts are users and live sockets online.
func (t *tracker) counts() (int, int) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.users), t.live
}
