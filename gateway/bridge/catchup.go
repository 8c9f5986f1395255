package bridge

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// catchUpTimeout bounds a catch-up's reads, and so how long live delivery
// may wait for it. The stream electing a leader takes 4 to 9 s, the
// JetStream meta group as long again when both led from the node that
// failed (the fault suite saw reads fail for 12 s after one kill); past
// it every socket resumes, and waits for the same stream.
const catchUpTimeout = 20 * time.Second

// maxCatchUp bounds the stored messages one catch-up reads; past it,
// every socket resumes.
const maxCatchUp = 20000

// catchUpFilters: a hub with up to this many subjects (the lobby, its
// rooms, two per user) reads only those; one with more reads every
// subject, as a consumer's filters would weigh more than the messages.
const catchUpFilters = 64

// roomsRereadWait bounds the reading again of every local user's rooms
// before a catch-up, roomReads of them at once; a user whose rooms are
// not read by then resumes.
const (
	roomsRereadWait = 3 * time.Second
	roomReads       = 64
)

// A catch-up queues at most a quarter of a socket's queue at once, after
// the socket has emptied half of it. Every socket has catchUpChunkGrace
// (plus twice WRITE_DELAY) per chunk to do so, the chunks' graces at
// most catchUpWriteWait in all; past it a socket may wait on, from
// another catchUpWriteWait shared by all sockets of the catch-up, and one
// still too full then (a client that does not read) is closed for
// resume. So the catch-up waits for writes at most twice
// catchUpWriteWait, however many clients do not read, and while time is
// left closes no reader that keeps up.
const (
	catchUpChunkGrace = 100 * time.Millisecond
	catchUpWriteWait  = 2 * time.Second
)

// streamReader reads every stored message on filters with a seq above
// after, up to the stream's last seq, and hands each to emit in seq
// order; cut says it stopped at limit with more to read.
type streamReader func(ctx context.Context, after uint64, filters []string, limit int, emit func(subject string, data []byte, seq uint64) error) (cut bool, err error)

// queueShare is what a catch-up queues to a socket at once (a quarter of
// its queue, in objects and in bytes), and the time each socket has to
// make room for each chunk.
type queueShare struct {
	objects, bytes int
	grace          time.Duration
}

func quarterOf(lim Limits) queueShare {
	return queueShare{objects: max(1, lim.QueueLen/4), bytes: lim.QueueBytes / 4, grace: catchUpChunkGrace + 2*lim.WriteDelay}
}

// stored is one message a catch-up read.
type stored struct {
	subject string
	data    []byte
	seq     uint64
}

// noteSeq raises the highest stored seq dispatched to seq.
func (h *hub) noteSeq(seq uint64) {
	raise(&h.highest, seq)
	raise(&h.streamSeen, seq)
}

// noteStream records that the stream held seq (a handshake's info).
func (h *hub) noteStream(seq uint64) { raise(&h.streamSeen, seq) }

func raise(v *atomic.Uint64, to uint64) {
	for {
		cur := v.Load()
		if to <= cur || v.CompareAndSwap(cur, to) {
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
	h.mu.RLock()
	readSince := h.readSince
	h.mu.RUnlock()
	if readSince == nil {
		h.resumeAll("nats connection interrupted: resume")
		return
	}
	start := time.Now()
	// Users whose rooms changed resume before anything more reaches them:
	// a room they entered is subscribed only now, so what it stored
	// meanwhile is not in the catch-up, and a socket that took later
	// messages would resume past it.
	changed := h.rereadRooms()
	h.resumeUsers(changed)
	ctx, cancel := context.WithTimeout(context.Background(), catchUpTimeout)
	defer cancel()
	after := h.highest.Load()
	w := &catchUpWrites{h: h}
	var read int
	cut, err := readSince(ctx, after, h.catchUpFilters(), maxCatchUp, func(subject string, data []byte, seq uint64) error {
		read++
		w.add(stored{subject, data, seq})
		return nil
	})
	if err != nil || cut {
		h.log.Warn("catch-up after a NATS reconnect failed; every socket resumes", "after", after, "read", read, "cut", cut, "err", err)
		h.resumeAll("nats connection interrupted: resume")
		return
	}
	w.flush()
	h.log.Info("caught up after a NATS reconnect", "after", after, "read", read, "delivered", w.delivered,
		"rooms_changed", len(changed), "slow_closed", w.slow, "took", time.Since(start).Round(time.Millisecond).String())
	if h.m != nil {
		h.m.catchUps.Inc()
		h.m.catchUpMsgs.Add(float64(w.delivered))
	}
	h.presenceNow()
}

// catchUpFilters is the stored subjects a catch-up reads: the hub's own,
// when few, else all.
func (h *hub) catchUpFilters() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if 1+len(h.rooms)+2*len(h.users) > catchUpFilters {
		return []string{chat.RoomSubjects, chat.DMSubjects}
	}
	filters := []string{strings.TrimPrefix(h.roomSub.Subject, chat.LivePrefix)}
	for room := range h.rooms {
		filters = append(filters, "chat.room."+room)
	}
	for id := range h.users {
		filters = append(filters, "chat.dm."+id+".*", "chat.dm.*."+id)
	}
	return filters
}

// catchUpWrites queues a catch-up's messages to the sockets in chunks, a
// quarter of a socket's queue at most, each once every socket has room
// for it (see catchUpWriteWait).
type catchUpWrites struct {
	h          *hub
	chunk      []stored
	chunkBytes int
	graceWait  time.Duration // waited within chunks' grace so far
	writeWait  time.Duration // waited past chunks' grace so far, all sockets together
	sockets    []*client
	dms        dmFrames
	delivered  int // deliveries, per subscription
	slow       int // sockets closed for not taking the chunks in time
}

// add takes one message read, queueing the chunk before it if full.
func (w *catchUpWrites) add(m stored) {
	size := len(m.data) + frameOverhead
	if len(w.chunk) > 0 && (len(w.chunk) >= w.h.chunk.objects || w.chunkBytes+size > w.h.chunk.bytes) {
		w.flush()
	}
	w.chunk = append(w.chunk, m)
	w.chunkBytes += size
}

// flush queues the chunk, once every socket has emptied half its queue.
func (w *catchUpWrites) flush() {
	if len(w.chunk) == 0 {
		return
	}
	w.waitForRoom()
	for _, m := range w.chunk {
		for _, sub := range w.h.subsOf(m.subject) {
			if w.h.liveSeqs.caughtUp(sub, m.subject, m.seq) {
				continue // came live already, or before sub began
			}
			w.h.dispatch(&nats.Msg{Subject: chat.LivePrefix + m.subject, Data: m.data, Sub: sub,
				Header: nats.Header{chat.SequenceHeader: {strconv.FormatUint(m.seq, 10)}}}, &w.dms)
			w.delivered++
		}
		w.h.noteSeq(m.seq)
	}
	clear(w.chunk)
	w.chunk, w.chunkBytes = w.chunk[:0], 0
}

// waitForRoom waits for every socket here to have emptied half its queue:
// each has the chunk's grace, then what is left of the catch-up's shared
// write time; one that has not by then is closed for resume.
func (w *catchUpWrites) waitForRoom() {
	h := w.h
	h.mu.RLock()
	w.sockets = w.sockets[:0]
	for c := range h.local {
		w.sockets = append(w.sockets, c)
	}
	h.mu.RUnlock()
	began := time.Now()
	chunkDeadline := began.Add(min(h.chunk.grace, catchUpWriteWait-w.graceWait))
	behind := w.sockets[:0] // reuses the array: each is read before written
	for _, c := range w.sockets {
		if !c.conn.WaitHalf(chunkDeadline) {
			behind = append(behind, c)
		}
	}
	w.graceWait += time.Since(began)
	for _, c := range behind {
		if left := catchUpWriteWait - w.writeWait; left > 0 {
			from := time.Now()
			ok := c.conn.WaitHalf(from.Add(left))
			w.writeWait += time.Since(from)
			if ok {
				continue
			}
		}
		if !c.conn.IsClosing() {
			c.frozen.Store(true)
			c.conn.Close(chat.CloseResume, "too slow to take what the gateway missed: resume")
			w.slow++
			if h.m != nil {
				h.m.resumeCloses.Inc()
			}
		}
	}
	clear(w.sockets)
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
// rooms could not be read within roomsRereadWait (they resume: what they
// may see is unknown).
func (h *hub) rereadRooms() []string {
	h.mu.RLock()
	loadRooms := h.loadRooms
	users := make([]string, 0, len(h.users))
	for id := range h.users {
		users = append(users, id)
	}
	h.mu.RUnlock()
	if loadRooms == nil {
		return nil
	}
	h.reconcileMu.Lock()
	defer h.reconcileMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), roomsRereadWait)
	defer cancel()
	var mu sync.Mutex
	var changed []string
	sem := make(chan struct{}, roomReads)
	var wg sync.WaitGroup
	for _, id := range users {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			rooms, err := loadRooms(ctx, id)
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
