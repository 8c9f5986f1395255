package bridge

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/gateway/wsconn"
	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natsconn"
)

// Presence timing on the gateway side.
const (
	// presenceResync is how often the gateway re-reads the whole online
	// list, so its sockets converge even on changes no event reported
	// (presence restarting, events lost while NATS was unreachable).
	presenceResync = 30 * time.Second
	// presenceTimeout bounds one presence.online request.
	presenceTimeout = 2 * time.Second
	// presenceBatch is how long a presence change may wait to go out with
	// the others of that moment: one write per socket per batch instead
	// of per change, which in a connect storm is the difference between
	// O(sockets x joins) and O(sockets x batches) socket writes.
	presenceBatch = 50 * time.Millisecond
	// A gateway with many sockets batches longer: presence batches take at
	// most presenceWritesPerSecond socket writes a second, and wait at
	// most presenceBatchMax (at 5,000 writes/s: 50 ms up to 250 sockets,
	// 400 ms at 2,000, the 1 s cap from 5,000). In a connect storm every
	// write not spent on presence goes to handshakes (5,000 rather than
	// 10,000 took 2,000 handshakes from 1,630 to 1,880/s).
	presenceWritesPerSecond = 5000
	presenceBatchMax        = time.Second
)

// presenceDelay is how long a batch waits on a gateway with sockets.
func presenceDelay(sockets int) time.Duration {
	return withinWriteBudget(sockets, presenceBatch, presenceBatchMax)
}

// withinWriteBudget is how often, between lo and hi, a frame to every one
// of sockets sockets may go out within presenceWritesPerSecond.
func withinWriteBudget(sockets int, lo, hi time.Duration) time.Duration {
	d := time.Duration(sockets) * time.Second / presenceWritesPerSecond
	return min(max(d, lo), hi)
}

// onPresence applies a change reported on presence.changed.<user>.
func (h *hub) onPresence(m *nats.Msg) {
	var ev chat.PresenceEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil || chat.ValidID(ev.User.ID) != nil {
		h.log.Warn("undecodable presence change", "subject", m.Subject)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if ev.Rev < h.presRev {
		return // older than a list or change already applied; an equal Rev is another user's change of the same bucket update
	}
	h.presRev = ev.Rev
	h.setOnline(ev.User, ev.Online)
}

// setOnline records a user's state and tells every local socket when it
// changed. h.mu is held.
func (h *hub) setOnline(u chat.User, online bool) {
	_, was := h.online[u.ID]
	if online == was {
		if online && u.Name != "" && h.online[u.ID].Name != u.Name {
			h.online[u.ID] = u // a name learned late: in the next list
			h.onlineKeys[u.ID] = strings.ToLower(u.Name + "\x00" + u.Account)
			h.byName = nil
			if len(h.pending) == 0 {
				h.listFrame = nil // else the batch's flush rebuilds it
			}
		}
		return
	}
	if online {
		h.online[u.ID] = u
		h.onlineKeys[u.ID] = strings.ToLower(u.Name + "\x00" + u.Account)
	} else {
		delete(h.online, u.ID)
		delete(h.onlineKeys, u.ID)
	}
	h.byName = nil
	if len(h.pending) > 0 {
		h.pending = append(h.pending, '\n')
	}
	line := chat.Encode(chat.PresenceFrame{Type: chat.FramePresence, User: u, Online: online})
	h.pending = append(h.pending, line...)
	h.changes = append(h.changes, presChange{user: u.ID, line: line})
	if !h.flushing {
		h.flushing = true
		delay := presenceDelay(len(h.local))
		if h.partial {
			delay = presenceBatchMax // a frame a second at most per socket
		}
		time.AfterFunc(delay, h.flushPresence)
	}
}

// presenceOnJoin queues a joining socket's view of presence: the list as
// of the last batch, then the changes since; from the next batch it gets
// only what follows them. h.mu is held.
func (h *hub) presenceOnJoin(c *client) {
	if h.partial { // the list as of now: deltas that follow may repeat it, harmlessly
		c.send(h.partialList(c.user.ID), nil)
		return
	}
	c.send(h.presenceListFrame(), nil)
	if len(h.pending) > 0 {
		c.send(h.pending, nil)
	}
	c.presJoined, c.presSeen = h.presSent, len(h.pending)
}

// flushPresence sends the pending presence changes, as one queued item,
// to every local socket (see flushFull), or in partial mode to those
// whose user has them as contacts (flushPartial); when the number online
// crossed PRESENCE_LIST_MAX since the last batch, every socket gets its
// list afresh instead.
func (h *hub) flushPresence() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.flushing = false
	batch := h.pending
	if len(batch) == 0 {
		return
	}
	var l wsconn.Lineup
	defer l.Flush()
	switch partial := h.partialMode(); {
	case partial != h.partial:
		h.partial = partial
		h.listFrame = nil
		h.resendLists(&l)
	case partial:
		h.flushPartial(&l)
	default:
		h.flushFull(batch, &l)
	}
	h.pending, h.changes = nil, nil
	h.presSent++
	h.listFrame = nil
	if !h.partial {
		h.presenceListFrame() // the list as of this batch, for the next joiners
	}
}

// flushFull sends a batch to every local socket: whole to those older
// than the batch, the part after what they got at join to those that
// joined during it. h.mu held for writing.
func (h *hub) flushFull(batch []byte, l *wsconn.Lineup) {
	for c := range h.local {
		switch {
		case c.presJoined != h.presSent || c.presSeen == 0:
			c.send(batch, l)
		case c.presSeen < len(batch):
			c.send(batch[c.presSeen+1:], l) // after the '\n' that ended what it got
		}
	}
}

// applyList replaces the online list with a snapshot newer than what the
// hub has applied, telling sockets the differences.
func (h *hub) applyList(list chat.PresenceList) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if list.Rev < h.presRev {
		return false // older than a change already applied: ask again later
	}
	h.presRev = list.Rev
	in := make(map[string]bool, len(list.Users))
	for _, u := range list.Users {
		in[u.ID] = true
		h.setOnline(u.User, true)
	}
	for id, u := range h.online {
		if !in[id] {
			h.setOnline(u, false)
		}
	}
	return true
}

// seesUser reports whether the hub sees id as a user: online (the
// presence list), or with a socket on this gateway (before presence
// reports it).
func (h *hub) seesUser(id string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	_, ok := h.online[id]
	return ok || h.users[id] != nil
}

// presenceListFrame is the online list as a socket's first presence
// frame, as of the last batch sent (with no batch pending, the current
// list), encoded once per batch rather than per socket. h.mu is held for
// writing.
func (h *hub) presenceListFrame() []byte {
	if h.listFrame != nil {
		return h.listFrame
	}
	users := make([]chat.User, 0, len(h.online))
	for _, u := range h.online {
		users = append(users, u)
	}
	slices.SortFunc(users, func(a, b chat.User) int { return strings.Compare(a.ID, b.ID) })
	h.listFrame = chat.Encode(chat.PresenceListFrame{Type: chat.FramePresence, Users: users})
	return h.listFrame
}

// fetchPresence asks the presence service for the whole list.
func fetchPresence(ctx context.Context, nc *nats.Conn) (chat.PresenceList, error) {
	var list chat.PresenceList
	ctx, cancel := context.WithTimeout(ctx, presenceTimeout)
	defer cancel()
	err := natsconn.RequestJSON(ctx, nc, chat.PresenceOnlineSubject, nil, &list)
	return list, err
}

// presenceNow makes syncPresence read the list again at once: the
// changes published while the NATS connection was down were missed.
func (h *hub) presenceNow() {
	select {
	case h.presenceSync <- struct{}{}:
	default:
	}
}

// syncPresence keeps the hub's online list current: at start as soon as
// presence answers, then every presenceResync, or at once when asked.
func (h *hub) syncPresence(ctx context.Context) {
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-h.presenceSync:
		}
		list, err := fetchPresence(ctx, h.nc)
		switch {
		case err != nil:
			h.log.Debug("presence list unavailable", "err", err)
			wait = time.Second
		case !h.applyList(list):
			wait = time.Second
		default:
			wait = presenceResync
		}
	}
}
