// Package quota bounds what one user may spend across all their sockets
// and all gateways. A Meter counts an amount (messages, bytes) per user
// in fixed windows (a minute, an hour) in a KV bucket every gateway
// shares (chat.QuotaBucket), so spreading over sockets or gateways buys a
// user nothing.
//
// A gateway does not ask the bucket for every send: it leases a share of
// the user's budget (a tenth, or what one send needs if more) and spends
// it locally, so a busy user costs about ten KV updates per window. A
// lease is granted only from what is left of the budget, by a
// compare-and-set on the user's entry, so the total spent in a window
// never passes the budget however many gateways lease at once (an entry
// is never overwritten by an older window: a gateway whose clock is
// behind refuses until it catches up); what a
// lease leaves unspent when its window ends is lost to the user, never
// granted twice.
package quota

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// leaseShares: a lease is 1/leaseShares of the budget.
const leaseShares = 10

// casRetries bounds the compare-and-set attempts of one lease under
// contention (the user's other gateways leasing at the same moment).
const casRetries = 16

// ErrContended: the user's entry kept changing under every attempt.
var ErrContended = errors.New("quota: entry changed under every retry")

// errNewerWindow: the user's entry counts a window after the one asked
// for (another gateway's clock is ahead, or this spend waited across a
// window's edge); the spend takes the time again.
var errNewerWindow = errors.New("quota: the entry counts a later window")

// Meter is one budget per user and window.
type Meter struct {
	name   string // the meter's key prefix
	kv     jetstream.KeyValue
	window time.Duration
	budget int64
	now    func() time.Time

	mu    sync.Mutex
	users map[string]*lease // the leases held here, by user
	swept int64             // the window whose older leases were dropped
}

// lease is what this gateway holds of one user's budget in one window.
type lease struct {
	mu     sync.Mutex // held across the KV round trip: one lease at a time per user
	window int64
	left   int64
	// unrecorded: this window's lease was granted here without the
	// bucket, which could not be reached (see Spend).
	unrecorded bool
}

// entry is a user's KV value: the window it counts and what was leased
// in it (an entry of an older window counts as nothing spent).
type entry struct {
	Window int64 `json:"w"`
	Spent  int64 `json:"spent"`
}

// NewMeter is a meter named name (a KV key prefix: letters and digits)
// allowing each user budget per window.
func NewMeter(kv jetstream.KeyValue, name string, window time.Duration, budget int64) *Meter {
	return &Meter{name: name, kv: kv, window: window, budget: budget, now: time.Now, users: map[string]*lease{}}
}

// Spend takes n from user's budget in the current window. When the
// budget cannot cover n it spends nothing and says how long until the
// next window; err is the bucket's failure (the caller refuses the send
// as unavailable).
//
// A bucket that cannot be reached (its raft group electing a leader for
// 4 to 9 s after a NATS node failed) does not stop sends at once: each
// gateway grants each user one lease per window on its own, unrecorded,
// before refusing. A user may so pass the budget by one lease (a tenth)
// per gateway per window while the bucket is down, and no more.
func (m *Meter) Spend(ctx context.Context, user string, n int64) (ok bool, retryAfter time.Duration, err error) {
	l := m.lockedLease(user)
	defer l.mu.Unlock()
	for range 2 {
		// The time is taken holding the lease: a spend that waited for it
		// counts in the window it is made in.
		now := m.now()
		w := m.windowAt(now)
		if l.window != w {
			l.window, l.left, l.unrecorded = w, 0, false
		}
		if l.left >= n {
			l.left -= n
			return true, 0, nil
		}
		need := n - l.left
		got, err := m.claim(ctx, user, w, max(need, m.budget/leaseShares), need)
		if errors.Is(err, errNewerWindow) {
			continue
		}
		if err != nil && !errors.Is(err, ErrContended) && !l.unrecorded {
			got, l.unrecorded = max(need, m.budget/leaseShares), true
		} else if err != nil {
			return false, 0, err
		}
		if got == 0 {
			return false, time.Duration((w+1)*int64(m.window) - now.UnixNano()), nil
		}
		l.left += got - n
		return true, 0, nil
	}
	// Still a later window by this gateway's clock: its clock is behind
	// another's. Refused until it catches up (NTP keeps that short).
	return false, m.window, nil
}

// lockedLease is user's lease here, locked. One swept from the map
// between its lookup and its lock (a window ended) is not used: a second
// lease for the user would be made, and with it a second unrecorded
// grant in a window.
func (m *Meter) lockedLease(user string) *lease {
	for {
		l := m.lease(user, m.windowAt(m.now()))
		l.mu.Lock()
		m.mu.Lock()
		current := m.users[user] == l
		m.mu.Unlock()
		if current {
			return l
		}
		l.mu.Unlock()
	}
}

// window_ is the index of the window at t.
func (m *Meter) windowAt(t time.Time) int64 { return t.UnixNano() / int64(m.window) }

// lease is user's lease here; leases of windows gone are dropped once
// per window, so the map holds only this window's spenders.
func (m *Meter) lease(user string, w int64) *lease {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.swept != w {
		for u, l := range m.users {
			if l.mu.TryLock() {
				if l.window < w {
					delete(m.users, u)
				}
				l.mu.Unlock()
			}
		}
		m.swept = w
	}
	l := m.users[user]
	if l == nil {
		l = &lease{window: w}
		m.users[user] = l
	}
	return l
}

// claim leases up to want of user's budget in window w, at least need:
// 0 when less than need is left.
func (m *Meter) claim(ctx context.Context, user string, w, want, need int64) (int64, error) {
	key := m.name + "." + user
	for range casRetries {
		e, rev, err := m.get(ctx, key, w)
		if err != nil {
			return 0, err
		}
		if e.Window > w {
			return 0, errNewerWindow // never write an older window over it
		}
		grant := min(want, m.budget-e.Spent)
		if grant < need {
			return 0, nil
		}
		b, _ := json.Marshal(entry{Window: w, Spent: e.Spent + grant})
		if rev == 0 {
			_, err = m.kv.Create(ctx, key, b)
		} else {
			_, err = m.kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return grant, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("quota %s: %w", m.name, err)
		}
	}
	return 0, ErrContended
}

// get reads key's entry as of window w (nothing spent if it counts an
// older one) and its revision (0: no entry).
func (m *Meter) get(ctx context.Context, key string, w int64) (entry, uint64, error) {
	kve, err := m.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return entry{Window: w}, 0, nil
	case err != nil:
		return entry{}, 0, fmt.Errorf("quota %s: %w", m.name, err)
	}
	var e entry
	if json.Unmarshal(kve.Value(), &e) != nil || e.Window < w {
		e = entry{Window: w} // a corrupt or older entry: nothing spent yet
	}
	return e, kve.Revision(), nil
}
