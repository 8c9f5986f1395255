package bridge

import (
	"cmp"
	"context"
	"fmt"
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

// partialMode reports whether presence lists are partial now. h.mu held.
func (h *hub) partialMode() bool { return h.presMax > 0 && len(h.online) > h.presMax }

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
)

// queueContacts asks for user's contacts to be read again; past the
// queue's bound the request is dropped (their list stays as it is until
// their next socket or membership change).
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
		h.log.Warn("contacts queue full; a presence list stays as it is", "user", user)
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
		h.log.Warn("contacts not read", "user", user, "err", err)
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
// changes of its user's contacts, then the total. h.mu held for writing.
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
	for c := range h.local {
		if b := perUser[c.user.ID]; len(b) > 0 {
			c.send(b, l)
		}
	}
	h.sendCount(l)
}

// countEvery is how often, at most, sockets with a partial list get the
// total: in a connect storm it changes every batch.
const countEvery = time.Second

// sendCount sends every socket the total online, unless one went out
// less than countEvery ago: then it goes then, with the total of then.
// h.mu held for writing.
func (h *hub) sendCount(l *wsconn.Lineup) {
	if wait := countEvery - time.Since(h.countSent); wait > 0 {
		if !h.countLater {
			h.countLater = true
			time.AfterFunc(wait, h.flushCount)
		}
		return
	}
	h.countSent = time.Now()
	count := chat.Encode(chat.OnlineCountFrame{Type: chat.FrameOnlineCount, Total: len(h.online)})
	for c := range h.local {
		c.send(count, l)
	}
}

// flushCount sends the total a batch held back (sendCount).
func (h *hub) flushCount() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.countLater = false
	if !h.partial {
		return
	}
	var l wsconn.Lineup
	defer l.Flush()
	h.sendCount(&l)
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
// query (any case), by name, from offset, with how many match.
func (h *hub) onlinePage(query string, offset int) ([]chat.User, int, bool) {
	q := strings.ToLower(strings.TrimSpace(query))
	h.mu.RLock()
	found := []chat.User{}
	for _, u := range h.online {
		if strings.Contains(strings.ToLower(u.Name), q) || strings.Contains(strings.ToLower(u.Account), q) {
			found = append(found, u)
		}
	}
	h.mu.RUnlock()
	slices.SortFunc(found, func(a, b chat.User) int {
		return cmp.Or(cmp.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)), cmp.Compare(a.ID, b.ID))
	})
	total := len(found)
	found = found[min(offset, total):]
	return found[:min(len(found), chat.OnlinePage)], total, len(found) > chat.OnlinePage
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
