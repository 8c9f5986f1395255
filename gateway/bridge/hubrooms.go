package bridge

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/services/chat"
)

// localRoom is a room with members connected here: the hub subscribes to
// its live messages and its events while it has one, so a gateway
// receives only the traffic of rooms its users are in.
type localRoom struct {
	users map[string]struct{} // members with a socket here
	subs  []*nats.Subscription
}

// roomLivePrefix starts the live subjects of room messages.
const roomLivePrefix = chat.LivePrefix + "chat.room."

// enter records that user (whose entry u is) is in room, subscribing to
// the room if they are its first member here, and says whether it did.
// Under h.mu (write). A new subscription reaches the server with the
// caller's flush, outside the lock (flushRooms): a message stored before
// then reaches the user by resume, history or the conversation list, not
// live.
func (h *hub) enter(user string, u *localUser, room string) bool {
	if room == chat.Lobby || u == nil {
		return false
	}
	if _, ok := u.rooms[room]; ok {
		return false
	}
	fresh := false
	u.rooms[room] = struct{}{}
	lr := h.rooms[room]
	if lr == nil {
		lr = &localRoom{users: map[string]struct{}{}}
		events, err := chat.RoomEventsSubject(room)
		if err != nil {
			return false
		}
		fresh = true
		for _, subject := range []string{roomLivePrefix + room, events} {
			s, err := h.nc.ChanSubscribe(subject, h.live)
			if err != nil {
				h.log.Warn("room subscription failed", "room", room, "err", err)
				continue
			}
			lr.subs = append(lr.subs, s)
			h.subRooms[s] = room
			h.liveSeqs.track(h.streamSeen.Load(), s)
		}
		h.rooms[room] = lr
	}
	lr.users[user] = struct{}{}
	return fresh
}

// flushRooms waits until the server has the room subscriptions made so
// far, when fresh says some are new, so that a socket told it joined a
// room gets every later message of it live.
func (h *hub) flushRooms(fresh bool) {
	if !fresh {
		return
	}
	if err := h.nc.FlushTimeout(subscribeTimeout); err != nil {
		h.log.Warn("room subscriptions not confirmed", "err", err)
	}
}

// exit undoes enter. Under h.mu (write).
func (h *hub) exit(user string, u *localUser, room string) {
	if u == nil {
		return
	}
	if _, ok := u.rooms[room]; !ok {
		return
	}
	delete(u.rooms, room)
	lr := h.rooms[room]
	if lr == nil {
		return
	}
	delete(lr.users, user)
	if len(lr.users) == 0 {
		for _, s := range lr.subs {
			delete(h.subRooms, s)
		}
		h.liveSeqs.forget(lr.subs)
		unsubscribe(lr.subs)
		delete(h.rooms, room)
	}
}

// dropUser ends a user's subscriptions and room memberships here, with
// their last socket. Under h.mu (write).
func (h *hub) dropUser(id string, u *localUser) {
	for room := range u.rooms {
		h.exit(id, u, room)
	}
	h.dropContacts(id, u)
	h.liveSeqs.forget(u.subs)
	unsubscribe(u.subs)
	delete(h.users, id)
}

// entered and left apply a membership change made on this gateway at
// once, so the user's next frame here sees it; the event every gateway
// gets (chat.FrameJoined, chat.FrameLeft on the user's events) applies it
// again, which changes nothing.
func (h *hub) entered(user, room string) {
	h.mu.Lock()
	fresh := h.enter(user, h.users[user], room)
	h.mu.Unlock()
	h.flushRooms(fresh)
}

func (h *hub) left(user, room string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.exit(user, h.users[user], room)
}

// isMember reports whether user, connected here, is in room.
func (h *hub) isMember(user, room string) bool {
	if room == chat.Lobby {
		return true
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	u := h.users[user]
	if u == nil {
		return false
	}
	_, ok := u.rooms[room]
	return ok
}

// roomsOf is the rooms user, connected here, is in (not the lobby).
func (h *hub) roomsOf(user string) []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	u := h.users[user]
	if u == nil {
		return nil
	}
	rooms := make([]string, 0, len(u.rooms))
	for r := range u.rooms {
		rooms = append(rooms, r)
	}
	return rooms
}

// subRoom is the room of one of the hub's room subscriptions.
func (h *hub) subRoom(sub *nats.Subscription) (string, bool) {
	if sub == nil {
		return "", false
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	room, ok := h.subRooms[sub]
	return room, ok
}

// onMemberRoom delivers what a room subscription received to the sockets
// of the room's members here: a stored message in seq order with the
// rest, or a room event (members, typing) to all but its actor's.
func (h *hub) onMemberRoom(room string, m *nats.Msg) {
	if strings.HasPrefix(m.Subject, chat.RoomEventsPrefix) {
		if strings.HasPrefix(string(m.Data), `{"type":"`+chat.FrameMember+`"`) {
			h.onMemberEvent(room, m.Data)
		}
		actor := m.Header.Get(chat.ActorHeader)
		h.mu.RLock()
		defer h.mu.RUnlock()
		h.eachMember(room, func(user string, c *client) {
			if user != actor {
				c.send(m.Data, nil)
			}
		})
		return
	}
	b, seq, ok := h.frame(m)
	if !ok {
		return
	}
	h.mu.RLock()
	h.eachMember(room, func(_ string, c *client) { c.deliver(b, seq, &h.roomLineup) })
	h.mu.RUnlock()
	h.roomLineup.Flush()
}

// eachMember calls f for every socket here of room's members. Under h.mu.
func (h *hub) eachMember(room string, f func(user string, c *client)) {
	lr := h.rooms[room]
	if lr == nil {
		return
	}
	for user := range lr.users {
		if u := h.users[user]; u != nil {
			for c := range u.clients {
				f(user, c)
			}
		}
	}
}

// applyMembership follows a joined or left frame on a user's events: a
// change made on another gateway (or this one) to the rooms of a user
// with sockets here.
func (h *hub) applyMembership(user string, frame []byte) {
	joined := strings.HasPrefix(string(frame), `{"type":"`+chat.FrameJoined+`"`)
	if !joined && !strings.HasPrefix(string(frame), `{"type":"`+chat.FrameLeft+`"`) {
		return
	}
	var f chat.MembershipFrame
	if json.Unmarshal(frame, &f) != nil || chat.ValidID(f.Room.ID) != nil {
		return
	}
	if joined {
		h.entered(user, f.Room.ID)
	} else {
		h.left(user, f.Room.ID)
	}
	// Events of one user published by different gateways (a leave on
	// one device, a join on another) may arrive in either order: the
	// user's entry says which came last.
	go h.reconcile(user)
}

// roomsFromStore reads the rooms user is in.
func (h *hub) roomsFromStore(user string) ([]string, error) {
	if h.loadRooms == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), subscribeTimeout)
	defer cancel()
	return h.loadRooms(ctx, user)
}

// reconcile makes a user's rooms here what their entry says, should
// membership events have come out of order (one at a time, each reading
// the entry afresh, so the last to run has the latest).
func (h *hub) reconcile(user string) {
	h.reconcileMu.Lock()
	defer h.reconcileMu.Unlock()
	rooms, err := h.roomsFromStore(user)
	if err != nil {
		h.log.Warn("rooms not re-read after a membership change", "user", user, "err", err)
		return
	}
	want := map[string]bool{}
	for _, r := range rooms {
		want[r] = true
	}
	h.mu.Lock()
	u := h.users[user]
	fresh := false
	if u != nil {
		for r := range u.rooms {
			if !want[r] {
				h.exit(user, u, r)
			}
		}
		for r := range want {
			fresh = h.enter(user, u, r) || fresh
		}
	}
	h.mu.Unlock()
	h.flushRooms(fresh)
	h.mu.RLock()
	contacts := h.wantContacts()
	h.mu.RUnlock()
	if contacts {
		h.queueContacts(user) // their rooms' members are their contacts
	}
}

// roomDropped closes the sockets of a room's members here for resume:
// the room's live messages were dropped under load (see onSlowConsumer).
func (h *hub) roomDropped(room string) {
	h.log.Error("room messages dropped under load; closing its members' sockets for resume", "room", room)
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.eachMember(room, func(_ string, c *client) {
		c.frozen.Store(true)
		c.conn.Close(chat.CloseResume, "messages dropped under load: resume")
	})
}

// onlineOf says which of ids are online.
func (h *hub) onlineOf(ids []string) map[string]bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	on := make(map[string]bool, len(ids))
	for _, id := range ids {
		if _, ok := h.online[id]; ok {
			on[id] = true
		}
	}
	return on
}

// onlineIDs is the ids of everyone online.
func (h *hub) onlineIDs() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	ids := make([]string, 0, len(h.online))
	for id := range h.online {
		ids = append(ids, id)
	}
	return ids
}

// onMemberEvent follows a room's member event: a cached member list goes,
// and one who joined becomes a contact of its members here.
func (h *hub) onMemberEvent(room string, data []byte) {
	if h.membersChanged != nil {
		h.membersChanged(room)
	}
	var f chat.MemberFrame
	if json.Unmarshal(data, &f) != nil || !f.Joined {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.memberJoined(room, f.User.ID, f.Members)
}
