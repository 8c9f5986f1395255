package bridge

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/natter/natter/gateway/wsconn"
	"github.com/natter/natter/services/chat"
)

// Presence beyond PRESENCE_LIST_MAX online (see chat.PresenceListFrame):
// a socket gets its user's contacts, not everyone, so what one socket
// costs stays bounded however many are online. The hub keeps each local
// user's contacts (at most presMax of them) and, the other way round,
// which local users have someone as a contact, so a change reaches just
// the sockets that care.

// contactsTimeout bounds the reads that find a user's contacts.
const contactsTimeout = 5 * time.Second

// wantContacts reports whether users' contacts are worth reading: in
// partial mode, or on the way there (half the threshold online), so a
// connect storm of a few users reads nothing. h.mu held.
func (h *hub) wantContacts() bool { return h.presMax > 0 && 2*len(h.online) > h.presMax }

// partialMode reports whether presence lists are partial now: past
// presMax online, and until a tenth fewer (at least one) are, so one
// account connecting and leaving at the threshold does not make every
// socket get its list afresh at every batch. h.mu held.
func (h *hub) partialMode() bool {
	if h.presMax == 0 {
		return false
	}
	if h.partial {
		return len(h.online) > h.presMax-max(1, h.presMax/10)
	}
	return len(h.online) > h.presMax
}

// partialList is user's presence list in partial mode: their contacts
// who are online (by id), with the total. h.mu held.
func (h *hub) partialList(user string) []byte {
	users := []chat.User{}
	if u := h.users[user]; u != nil {
		for id := range u.contacts {
			if o, ok := h.online[id]; ok {
				users = append(users, o)
			}
		}
	}
	slices.SortFunc(users, func(a, b chat.User) int { return strings.Compare(a.ID, b.ID) })
	return chat.Encode(chat.PresenceListFrame{Type: chat.FramePresence, Users: users, Partial: true, Total: len(h.online)})
}

// Reading contacts takes stream and bucket round trips: a few workers do
// it from a bounded queue, so a connect storm reads them in turn (a user
// queued twice is read once) and never holds up delivery.
const (
	contactsWorkers = 2
	contactsQueue   = 4096
	contactsRetry   = 5 * time.Second // after a read that failed
)

// queueContacts asks for user's contacts to be read again; past the
// queue's bound the request is dropped (a user without contacts is asked
// for again with their next socket, or when the mode changes).
func (h *hub) queueContacts(user string) {
	h.contactsMu.Lock()
	defer h.contactsMu.Unlock()
	if h.contactsQueued[user] {
		return
	}
	select {
	case h.contactsQ <- user:
		h.contactsQueued[user] = true
	default:
		h.m.errors.WithLabelValues("contacts_dropped").Inc()
	}
}

// readContacts is one contacts worker, until the hub closes.
func (h *hub) readContacts() {
	for {
		select {
		case user := <-h.contactsQ:
			h.contactsMu.Lock()
			delete(h.contactsQueued, user)
			h.contactsMu.Unlock()
			h.refreshContacts(user)
		case <-h.stop:
			return
		}
	}
}

// refreshContacts reads user's contacts and, in partial mode, sends their
// sockets their list afresh.
func (h *hub) refreshContacts(user string) {
	if h.loadContacts == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), contactsTimeout)
	defer cancel()
	ids, err := h.loadContacts(ctx, user)
	if err != nil {
		h.log.Warn("contacts not read; asking again later", "user", user, "err", err)
		time.AfterFunc(contactsRetry, func() { h.queueContacts(user) })
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	u := h.users[user]
	if u == nil {
		return // gone meanwhile
	}
	h.setContacts(user, u, ids)
	if h.partialMode() {
		list := h.partialList(user)
		for c := range u.clients {
			c.send(list, nil)
		}
	}
}

// setContacts replaces a local user's contacts (at most presMax). h.mu
// held for writing.
func (h *hub) setContacts(user string, u *localUser, ids []string) {
	h.dropContacts(user, u)
	u.contacts = make(map[string]struct{}, min(len(ids), h.presMax))
	for _, id := range ids {
		if len(u.contacts) >= h.presMax {
			break
		}
		if id == user {
			continue
		}
		u.contacts[id] = struct{}{}
		if h.contactOf[id] == nil {
			h.contactOf[id] = map[string]struct{}{}
		}
		h.contactOf[id][user] = struct{}{}
	}
}

// dropContacts forgets a local user's contacts. h.mu held for writing.
func (h *hub) dropContacts(user string, u *localUser) {
	for id := range u.contacts {
		if m := h.contactOf[id]; m != nil {
			delete(m, user)
			if len(m) == 0 {
				delete(h.contactOf, id)
			}
		}
	}
	u.contacts = nil
}

// flushPartial sends a batch of changes in partial mode: each socket the
// changes of its user's contacts, with the total when one is due, in one
// write. h.mu held for writing.
func (h *hub) flushPartial(l *wsconn.Lineup) {
	perUser := map[string][]byte{}
	for _, ch := range h.changes {
		for user := range h.contactOf[ch.user] {
			b := perUser[user]
			if len(b) > 0 {
				b = append(b, '\n')
			}
			perUser[user] = append(b, ch.line...)
		}
	}
	count := h.countDue()
	for c := range h.local {
		b := perUser[c.user.ID]
		switch {
		case len(b) > 0 && count != nil:
			c.send(append(append(b[:len(b):len(b)], '\n'), count...), l)
		case len(b) > 0:
			c.send(b, l)
		case count != nil:
			c.send(count, l)
		}
	}
}

// The total goes to sockets with a partial list at most every
// countEvery, and on a gateway with many sockets within the presence
// write budget (presenceWritesPerSecond, every socket gets it): every 3 s
// at 15,000 sockets, at most every countEveryMax. In a connect storm it
// changes every batch, and a frame a second to each of 15,000 sockets
// would take writes from the handshakes.
const (
	countEvery    = time.Second
	countEveryMax = 5 * time.Second
)

// countInterval is the least time between two totals on a gateway with
// sockets sockets.
func countInterval(sockets int) time.Duration {
	return withinWriteBudget(sockets, countEvery, countEveryMax)
}

// countDue is the total as a frame if one may go out now; if not, one is
// scheduled for when it may (flushCount). h.mu held for writing.
func (h *hub) countDue() []byte {
	if wait := countInterval(len(h.local)) - time.Since(h.countSent); wait > 0 {
		if !h.countLater {
			h.countLater = true
			time.AfterFunc(wait, h.flushCount)
		}
		return nil
	}
	h.countSent = time.Now()
	return chat.Encode(chat.OnlineCountFrame{Type: chat.FrameOnlineCount, Total: len(h.online)})
}

// flushCount sends the total a batch held back (countDue).
func (h *hub) flushCount() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.countLater = false
	select {
	case <-h.stop:
		return
	default:
	}
	if !h.partial {
		return
	}
	count := h.countDue()
	if count == nil {
		return
	}
	var l wsconn.Lineup
	defer l.Flush()
	for c := range h.local {
		c.send(count, &l)
	}
}

// resendLists sends every socket its list afresh: the mode changed (the
// number online passed PRESENCE_LIST_MAX), so deltas would not add up.
// h.mu held for writing.
func (h *hub) resendLists(l *wsconn.Lineup) {
	partial := h.partialMode()
	for user, u := range h.users {
		if partial && u.contacts == nil {
			h.queueContacts(user) // its list follows when read
		}
		list := h.presenceListFrame()
		if partial {
			list = h.partialList(user)
		}
		for c := range u.clients {
			c.send(list, l)
		}
	}
}

// onlinePage is a page of everyone online whose name or handle holds
// query (any case), by name, from offset, with how many match: one scan
// of names kept in lower case, in an order kept until someone comes or
// goes.
func (h *hub) onlinePage(query string, offset int) ([]chat.User, int, bool) {
	q := strings.ToLower(strings.TrimSpace(query))
	h.mu.Lock()
	if h.byName == nil {
		h.byName = slices.SortedFunc(maps.Values(h.online), func(a, b chat.User) int {
			return cmp.Or(cmp.Compare(h.onlineKeys[a.ID], h.onlineKeys[b.ID]), cmp.Compare(a.ID, b.ID))
		})
	}
	byName, keys := h.byName, h.onlineKeys
	found, total := []chat.User{}, 0
	for _, u := range byName {
		if strings.Contains(keys[u.ID], q) {
			if total >= offset && len(found) <= chat.OnlinePage {
				found = append(found, u)
			}
			total++
		}
	}
	h.mu.Unlock()
	return found[:min(len(found), chat.OnlinePage)], total, len(found) > chat.OnlinePage
}

// dmPartner is the other user of a direct conversation's live subject, as
// user sees it.
func dmPartner(subject, user string) string {
	return subjectTo(user, strings.TrimPrefix(subject, chat.LivePrefix)).User
}

// noteContact makes other a contact of user (someone they now have a
// direct conversation with), telling their sockets whether other is
// online, in partial mode, when other was not one already. Cheap when
// nothing changes: a read lock.
func (h *hub) noteContact(user, other string) {
	if h.presMax == 0 || other == "" || other == user {
		return
	}
	// Called after a delivery, outside the lock: the user's last socket
	// here may have left since, and then they have no entry.
	h.mu.RLock()
	u := h.users[user]
	known := u == nil
	if u != nil {
		_, known = u.contacts[other]
	}
	h.mu.RUnlock()
	if known {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.addContacts(user, []string{other})
}

// addContacts adds ids to a local user's contacts (up to presMax), and in
// partial mode tells their sockets which of them are online. h.mu held
// for writing.
func (h *hub) addContacts(user string, ids []string) {
	u := h.users[user]
	if u == nil || u.contacts == nil {
		return // not read yet: the read will have them
	}
	var lines []byte
	for _, id := range ids {
		if _, ok := u.contacts[id]; ok || id == user || len(u.contacts) >= h.presMax {
			continue
		}
		u.contacts[id] = struct{}{}
		if h.contactOf[id] == nil {
			h.contactOf[id] = map[string]struct{}{}
		}
		h.contactOf[id][user] = struct{}{}
		if o, on := h.online[id]; on && h.partial {
			if len(lines) > 0 {
				lines = append(lines, '\n')
			}
			lines = append(lines, chat.Encode(chat.PresenceFrame{Type: chat.FramePresence, User: o, Online: true})...)
		}
	}
	if len(lines) > 0 {
		for c := range u.clients {
			c.send(lines, nil)
		}
	}
}

// memberJoined makes a room's new member a contact of its members here,
// if the room is small enough for its members to be contacts. h.mu held
// for writing.
func (h *hub) memberJoined(room, member string, members int) {
	if h.presMax == 0 || members > chat.PresenceRoomMembers {
		return
	}
	if lr := h.rooms[room]; lr != nil {
		for user := range lr.users {
			h.addContacts(user, []string{member})
		}
	}
}

// handleOnline answers a page of everyone online matching a query: how a
// client with a partial list finds the others (the gateway knows everyone
// online, so no round trip).
func (g *Gateway) handleOnline(c *client, f chat.ClientFrame) {
	if n := len([]rune(f.Query)); n > chat.MaxRoomQuery || f.Offset < 0 {
		c.reply(errorFrame(f.ID, chat.CodeBadFrame, fmt.Sprintf("query is at most %d characters and offset at least 0", chat.MaxRoomQuery)))
		return
	}
	if !c.charge(f.ID, "online") {
		return
	}
	users, total, more := g.hub.onlinePage(f.Query, f.Offset)
	c.reply(chat.OnlineFrame{Type: chat.FrameOnline, ID: f.ID, Users: users, Total: total, More: more, Next: f.Offset + len(users)})
}
