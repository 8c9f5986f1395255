package bridge

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/services/chat"
)

// Core NATS does not redeliver what was published while a connection was
// down: a gateway whose NATS connection drops (its node killed, paused or
// cut off, or the watchdog leaving a silent one) misses the live messages
// stored meanwhile. Closing every socket for resume (4011) recovered
// them, at the cost of a reconnect storm on every NATS blip: each socket
// of the gateway handshakes and replays again, all at once.
//
// Instead, the hub's dispatcher notices the reconnect (the connection's
// reconnect count, raised before the new connection delivers anything)
// before it dispatches anything that came after it, and first reads from
// the stream every message stored after the highest seq it had
// dispatched, up to the stream's last seq, delivering those its
// subscriptions would have had, in seq order. What then comes live at or
// below that seq is a duplicate (liveSeqs). So each socket still gets its
// messages in stream order, and stays open.
//
// Not recovered, as they are not stored: user and room events published
// meanwhile (read cursors, receipts, typing, member changes); the
// conversation list and the page's history bring cursors back. Presence
// is read again at once. Room memberships changed meanwhile (their joined
// and left events lost) are read again before the catch-up, and the
// sockets of users whose rooms changed are closed for resume, so their
// page learns its rooms again (hello).
//
// A catch-up that cannot finish (the stream unreachable for
// catchUpTimeout, or more than maxCatchUp messages to read) falls back to
// closing every socket for resume.

// catchUpDelay is how long after noticing a reconnect the catch-up
// waits, so the resent subscriptions' interest has reached every node of
// the cluster: a message stored after the catch-up's last seq then comes
// live.
const catchUpDelay = 500 * time.Millisecond

// catchUpTimeout bounds a catch-up's reads: the stream electing a leader
// takes 4 to 9 s, and live delivery waits meanwhile.
const catchUpTimeout = 12 * time.Second

// maxCatchUp bounds the stored messages one catch-up reads, whatever
// their conversation (it reads every subject: a gateway may hold
// thousands of users' subscriptions); past it, every socket resumes.
const maxCatchUp = 20000

// roomReads is how many users' rooms a catch-up reads at once.
const roomReads = 16

// streamReader reads every stored message with a seq above after, up to
// the stream's last seq, and hands each to emit in seq order; cut says it
// stopped at limit with more to read.
type streamReader func(ctx context.Context, after uint64, limit int, emit func(subject string, data []byte, seq uint64) error) (cut bool, err error)

// noteSeq raises the highest stored seq dispatched to seq.
func (h *hub) noteSeq(seq uint64) {
	for {
		cur := h.highest.Load()
		if seq <= cur || h.highest.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// reconnected says whether the NATS connection reconnected since the
// dispatcher last looked; only the dispatcher calls it.
func (h *hub) reconnected() bool {
	n := h.nc.Stats().Reconnects
	if n == h.reconnectsSeen {
		return false
	}
	h.reconnectsSeen = n
	return true
}

// wake makes the dispatcher look at the connection even if nothing
// arrives (called on each reconnect).
func (h *hub) wake() {
	select {
	case h.liveReady <- struct{}{}:
	default:
	}
}

// catchUp delivers what the hub's subscriptions missed while the NATS
// connection was down (see the top of this file). Only the dispatcher
// calls it, before dispatching anything that came after the reconnect.
func (h *hub) catchUp() {
	select {
	case <-time.After(catchUpDelay):
	case <-h.stop:
		return
	}
	if h.readSince == nil {
		h.resumeAll("nats connection interrupted: resume")
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), catchUpTimeout)
	defer cancel()
	changed := h.rereadRooms(ctx)
	after := h.highest.Load()
	var read, delivered int
	var dms dmFrames
	cut, err := h.readSince(ctx, after, maxCatchUp, func(subject string, data []byte, seq uint64) error {
		read++
		for _, sub := range h.subsOf(subject) {
			if h.liveSeqs.caughtUp(sub, subject, seq) {
				continue // came live already
			}
			h.dispatch(&nats.Msg{Subject: chat.LivePrefix + subject, Data: data, Sub: sub,
				Header: nats.Header{chat.SequenceHeader: {strconv.FormatUint(seq, 10)}}}, &dms)
			delivered++
		}
		h.noteSeq(seq)
		return nil
	})
	if err != nil || cut {
		h.log.Warn("catch-up after a NATS reconnect failed; every socket resumes", "after", after, "read", read, "cut", cut, "err", err)
		h.resumeAll("nats connection interrupted: resume")
		return
	}
	h.log.Info("caught up after a NATS reconnect", "after", after, "read", read, "delivered", delivered,
		"rooms_changed", len(changed), "took", time.Since(start).Round(time.Millisecond).String())
	if h.m != nil {
		h.m.catchUps.Inc()
		h.m.catchUpMsgs.Add(float64(delivered))
	}
	h.resumeUsers(changed)
	h.presenceNow()
}

// resumeAll closes every socket for resume (4011), which replays what it
// missed from the stream; the gap tracking starts afresh.
func (h *hub) resumeAll(reason string) {
	h.freezeAll()
	h.liveSeqs.reset()
	n := h.closeAll(chat.CloseResume, reason)
	if h.m != nil {
		h.m.resumeCloses.Add(float64(n))
	}
}

// resumeUsers closes the sockets of users for resume.
func (h *hub) resumeUsers(users []string) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, id := range users {
		if u := h.users[id]; u != nil {
			for c := range u.clients {
				c.frozen.Store(true)
				c.conn.Close(chat.CloseResume, "rooms changed while the gateway was away: resume")
				if h.m != nil {
					h.m.resumeCloses.Inc()
				}
			}
		}
	}
}

// rereadRooms reads again the rooms of every user here, a few at a time,
// and makes the hub's subscriptions follow: joins and leaves made on
// other gateways while the connection was down were announced by events
// this gateway missed. It returns the users whose rooms changed, or whose
// rooms could not be read (they resume: what they see is unknown).
func (h *hub) rereadRooms(ctx context.Context) []string {
	if h.loadRooms == nil {
		return nil
	}
	h.reconcileMu.Lock()
	defer h.reconcileMu.Unlock()
	h.mu.RLock()
	users := make([]string, 0, len(h.users))
	for id := range h.users {
		users = append(users, id)
	}
	h.mu.RUnlock()
	var mu sync.Mutex
	var changed []string
	sem := make(chan struct{}, roomReads)
	var wg sync.WaitGroup
	for _, id := range users {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			rctx, cancel := context.WithTimeout(ctx, subscribeTimeout)
			defer cancel()
			rooms, err := h.loadRooms(rctx, id)
			if err != nil || h.setRooms(id, rooms) {
				mu.Lock()
				changed = append(changed, id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	h.flushRooms(len(changed) > 0)
	return changed
}

// setRooms makes user's rooms here rooms, and says whether they changed.
func (h *hub) setRooms(user string, rooms []string) bool {
	want := map[string]bool{}
	for _, r := range rooms {
		want[r] = true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	u := h.users[user]
	if u == nil {
		return false
	}
	changed := false
	for r := range u.rooms {
		if !want[r] {
			h.exit(user, u, r)
			changed = true
		}
	}
	for r := range want {
		if _, ok := u.rooms[r]; !ok && r != chat.Lobby {
			h.enter(user, u, r)
			changed = true
		}
	}
	return changed
}

// subsOf is the hub's subscriptions that would have received the live
// copy of a message stored on subject.
func (h *hub) subsOf(subject string) []*nats.Subscription {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.roomSub != nil && chat.LivePrefix+subject == h.roomSub.Subject {
		return []*nats.Subscription{h.roomSub}
	}
	if room, ok := strings.CutPrefix(subject, "chat.room."); ok {
		if lr := h.rooms[room]; lr != nil {
			return subOn(nil, lr.subs, roomLivePrefix+room)
		}
		return nil
	}
	pair, ok := strings.CutPrefix(subject, "chat.dm.")
	if !ok {
		return nil
	}
	lo, hi, ok := strings.Cut(pair, ".")
	if !ok {
		return nil
	}
	var subs []*nats.Subscription
	if u := h.users[lo]; u != nil {
		subs = subOn(subs, u.subs, dmPrefix+lo+".*")
	}
	if u := h.users[hi]; u != nil {
		subs = subOn(subs, u.subs, dmPrefix+"*."+hi)
	}
	return subs
}

// subOn appends to out the subscription of subs on subject, if any.
func subOn(out, subs []*nats.Subscription, subject string) []*nats.Subscription {
	for _, s := range subs {
		if s.Subject == subject {
			return append(out, s)
		}
	}
	return out
}
