package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/natter/natter/services/chat"
)

// The room requests (see chat's "Rooms"). Each takes a few KV round trips
// on the socket's reader, so a socket's requests are answered in order,
// and costs HistoryCost of the send rate.

// lobbyRoom is the lobby as a room.
var lobbyRoom = chat.Room{ID: chat.Lobby, Name: "Lobby", Visibility: chat.Public}

// handleRoomCreate makes a room with the user as its owner and first member.
func (g *Gateway) handleRoomCreate(c *client, f chat.ClientFrame) {
	name := strings.TrimSpace(f.Name)
	visibility := cmp.Or(f.Visibility, chat.Public)
	if e := checkRoomName(f.ID, name); e != nil {
		c.reply(*e)
		return
	}
	if visibility != chat.Public && visibility != chat.Private {
		c.reply(errorFrame(f.ID, chat.CodeBadVisibility, `visibility is "public" or "private"`))
		return
	}
	if !c.charge(f.ID, "room_create") {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	r, err := g.rooms.create(ctx, c.user.ID, name, visibility)
	if err != nil {
		c.reply(g.roomRefusal(f.ID, "", err))
		return
	}
	g.roomDir.set(r)
	g.hub.entered(c.user.ID, r.ID)
	c.reply(chat.RoomFrame{Type: chat.FrameRoom, ID: f.ID, Room: r})
	g.publishUser(c.user.ID, g.joinedFrame(ctx, c.user.ID, r))
}

// checkRoomName refuses a name (trimmed) that is empty, too long, or has
// control characters (line breaks, bidi overrides are text: they stay).
func checkRoomName(id, name string) *chat.ErrorFrame {
	n := utf8.RuneCountInString(name)
	switch {
	case n == 0:
		return refusal(id, chat.CodeBadName, "a room needs a name")
	case n > chat.MaxRoomName:
		return refusal(id, chat.CodeBadName, fmt.Sprintf("the name has %d characters; the limit is %d", n, chat.MaxRoomName))
	case !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsControl):
		return refusal(id, chat.CodeBadName, "a room name cannot hold control characters")
	}
	return nil
}

// handleRooms answers a page of public rooms matching a query, with the
// private ones the user was invited to.
func (g *Gateway) handleRooms(c *client, f chat.ClientFrame) {
	if n := utf8.RuneCountInString(f.Query); n > chat.MaxRoomQuery || f.Offset < 0 {
		c.reply(errorFrame(f.ID, chat.CodeBadFrame, fmt.Sprintf("query is at most %d characters and offset at least 0", chat.MaxRoomQuery)))
		return
	}
	if !c.charge(f.ID, "rooms") {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	u, err := g.rooms.userRooms(ctx, c.user.ID)
	if err != nil {
		c.reply(g.roomRefusal(f.ID, "", err))
		return
	}
	rooms, more := g.roomDir.search(f.Query, u.Invites, f.Offset)
	c.reply(chat.RoomsFrame{Type: chat.FrameRooms, ID: f.ID, Rooms: rooms, More: more, Next: f.Offset + len(rooms)})
}

// handleJoin makes the user a member of a public room, or of a private
// one they were invited to.
func (g *Gateway) handleJoin(c *client, f chat.ClientFrame) {
	if e := checkRoomField(f); e != nil {
		c.reply(*e)
		return
	}
	if f.Room == chat.Lobby {
		c.reply(chat.MembershipFrame{Type: chat.FrameJoined, ID: f.ID, Room: lobbyRoom})
		return
	}
	if !c.charge(f.ID, "join") {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	r, err := g.rooms.join(ctx, c.user.ID, f.Room)
	if errors.Is(err, errAlready) {
		g.hub.entered(c.user.ID, f.Room)
		joined := g.joinedFrame(ctx, c.user.ID, r)
		joined.ID = f.ID
		c.reply(joined)
		return
	}
	if err != nil {
		c.reply(g.roomRefusal(f.ID, f.Room, err))
		return
	}
	g.hub.entered(c.user.ID, r.ID)
	g.members.drop(r.ID)
	g.publishUser(c.user.ID, g.joinedFrame(ctx, c.user.ID, r))
	g.publishRoom(r.ID, c.user.ID, chat.MemberFrame{Type: chat.FrameMember, Room: r.ID, User: c.user, Joined: true, Members: r.Members})
}

// handleLeave ends the user's membership of a room (not the lobby's).
func (g *Gateway) handleLeave(c *client, f chat.ClientFrame) {
	if e := checkRoomField(f); e != nil {
		c.reply(*e)
		return
	}
	if f.Room == chat.Lobby {
		c.reply(errorFrame(f.ID, chat.CodeLobbyFixed, "everyone is in the lobby: it cannot be left"))
		return
	}
	if !g.hub.isMember(c.user.ID, f.Room) {
		c.reply(*unknownRoom(f.ID, f.Room))
		return
	}
	if !c.charge(f.ID, "leave") {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	r, err := g.rooms.leave(ctx, c.user.ID, f.Room)
	if errors.Is(err, errUnknownRoom) {
		g.hub.left(c.user.ID, f.Room) // their entry says they left already
	}
	if err != nil {
		c.reply(g.roomRefusal(f.ID, f.Room, err))
		return
	}
	// The directory learns the count from its watch: a room left empty is
	// deleted, and setting it here could outlive the deletion.
	g.hub.left(c.user.ID, f.Room)
	g.members.drop(f.Room)
	g.publishUser(c.user.ID, chat.MembershipFrame{Type: chat.FrameLeft, Room: r})
	g.publishRoom(f.Room, c.user.ID, chat.MemberFrame{Type: chat.FrameMember, Room: f.Room, User: c.user, Joined: false, Members: r.Members})
}

// handleInvite lets another user join a room the user is in: the one
// invited is told on every socket, once (a repeated invite, or one to a
// member, is no news to them); the inviting socket gets the invite back.
// INVITES_PER_HOUR bounds what one user can send anyone's way.
func (g *Gateway) handleInvite(c *client, f chat.ClientFrame) {
	if e := checkRoomField(f); e != nil {
		c.reply(*e)
		return
	}
	switch {
	case f.Room == chat.Lobby:
		c.reply(errorFrame(f.ID, chat.CodeLobbyFixed, "everyone is in the lobby already"))
		return
	case !g.hub.isMember(c.user.ID, f.Room):
		c.reply(*unknownRoom(f.ID, f.Room))
		return
	case f.User == "":
		c.reply(errorFrame(f.ID, chat.CodeMissingField, `invite needs "user": who to invite`))
		return
	case chat.ValidID(f.User) != nil:
		c.reply(errorFrame(f.ID, chat.CodeBadID, "user: "+chat.ValidID(f.User).Error()))
		return
	}
	if !c.charge(f.ID, "invite") {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	if ok, wait, err := g.inviteQuota.Spend(ctx, c.user.ID, 1); err != nil || !ok {
		if err != nil {
			c.reply(errorFrame(f.ID, chat.CodeUnavailable, "cannot check your quota now; retry"))
		} else {
			c.reply(quotaRefusal(f.ID, wait, fmt.Sprintf("at most %d invites an hour; the next in %d s", g.limits.InvitesPerHour, seconds(wait))))
		}
		return
	}
	users, err := g.auth.Users(ctx, []string{f.User})
	invitee, found := users[f.User]
	switch {
	case err != nil:
		c.reply(errorFrame(f.ID, chat.CodeUnavailable, "cannot check the user now; retry"))
		return
	case !found:
		c.reply(errorFrame(f.ID, chat.CodeUnknownRecipient, fmt.Sprintf("no user %q", f.User)))
		return
	}
	r, err := g.rooms.info(ctx, f.Room)
	if err == nil {
		err = g.rooms.invite(ctx, f.User, f.Room)
	}
	if err != nil && !errors.Is(err, errAlready) {
		c.reply(g.roomRefusal(f.ID, f.Room, err))
		return
	}
	if err == nil {
		g.publishUser(f.User, chat.InvitedFrame{Type: chat.FrameInvited, Room: r, By: &c.user})
	}
	c.reply(chat.InvitedFrame{Type: chat.FrameInvited, ID: f.ID, Room: r, User: &invitee})
}

// handleMembers answers a page of a room's members, online first.
func (g *Gateway) handleMembers(c *client, f chat.ClientFrame) {
	if e := checkRoomField(f); e != nil {
		c.reply(*e)
		return
	}
	switch {
	case f.Offset < 0:
		c.reply(errorFrame(f.ID, chat.CodeBadFrame, "offset is at least 0"))
		return
	case !g.hub.isMember(c.user.ID, f.Room):
		c.reply(*unknownRoom(f.ID, f.Room))
		return
	}
	if !c.charge(f.ID, "members") {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	ids, err := g.memberIDs(ctx, f.Room)
	if err != nil {
		c.reply(g.roomRefusal(f.ID, f.Room, err))
		return
	}
	online := g.hub.onlineOf(ids)
	slices.SortFunc(ids, func(a, b string) int {
		if online[a] != online[b] {
			if online[a] {
				return -1
			}
			return 1
		}
		return cmp.Compare(a, b)
	})
	page := ids[min(f.Offset, len(ids)):]
	more := len(page) > chat.MembersPage
	page = page[:min(len(page), chat.MembersPage)]
	users, err := g.auth.Users(ctx, page)
	if err != nil {
		g.log.Warn("member names: user lookup failed", "err", err)
	}
	owner := ""
	if r, ok := g.roomDir.get(f.Room); ok {
		owner = r.Owner
	}
	people := make([]chat.RoomPerson, 0, len(page))
	for _, id := range page {
		u, ok := users[id]
		if !ok {
			u = chat.User{ID: id, Name: id}
		}
		people = append(people, chat.RoomPerson{User: u, Online: online[id], Owner: id == owner})
	}
	c.reply(chat.MembersFrame{Type: chat.FrameMembers, ID: f.ID, Room: f.Room, Members: people,
		Total: len(ids), More: more, Next: f.Offset + len(people)})
}

// memberIDs is the ids of a room's members: the lobby's are everyone
// online.
func (g *Gateway) memberIDs(ctx context.Context, room string) ([]string, error) {
	if room == chat.Lobby {
		return g.hub.onlineIDs(), nil
	}
	if ids, ok := g.members.get(room); ok {
		return ids, nil
	}
	ids, err := g.rooms.members(ctx, room)
	if err == nil {
		g.members.put(room, ids)
	}
	return slices.Clone(ids), err
}

// memberCache keeps rooms' member lists for a few seconds: listing a
// room's members reads every member key, 10,000 in the biggest room, and
// its members asking one page after another, on many sockets, would each
// read them all again.
type memberCache struct {
	mu    sync.Mutex
	rooms map[string]memberList
}

type memberList struct {
	ids []string
	at  time.Time
}

// Bounds of the member cache: how long a list serves, how many rooms.
const (
	memberCacheTTL   = 5 * time.Second
	memberCacheRooms = 256
)

// drop forgets room's list: its members changed.
func (mc *memberCache) drop(room string) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	delete(mc.rooms, room)
}

// get is a copy of room's cached member ids, if fresh.
func (mc *memberCache) get(room string) ([]string, bool) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	l, ok := mc.rooms[room]
	if !ok || time.Since(l.at) > memberCacheTTL {
		return nil, false
	}
	return slices.Clone(l.ids), true
}

// put caches room's member ids, making room by dropping stale lists (or,
// if none is stale, any one).
func (mc *memberCache) put(room string, ids []string) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if mc.rooms == nil {
		mc.rooms = map[string]memberList{}
	}
	if len(mc.rooms) >= memberCacheRooms {
		for r, l := range mc.rooms {
			if time.Since(l.at) > memberCacheTTL || len(mc.rooms) >= memberCacheRooms {
				delete(mc.rooms, r)
			}
		}
	}
	mc.rooms[room] = memberList{ids: ids, at: time.Now()}
}

// joinedFrame tells user's sockets they are in r, with the room's entry
// of their conversation list (left out if it cannot be read now: the next
// list has it).
func (g *Gateway) joinedFrame(ctx context.Context, user string, r chat.Room) chat.MembershipFrame {
	conv, err := g.conversation(ctx, user, chat.To{Room: r.ID})
	if err != nil {
		g.log.Warn("joined room's conversation not read", "room", r.ID, "err", err)
	}
	return chat.MembershipFrame{Type: chat.FrameJoined, Room: r, Conversation: conv}
}

// checkRoomField checks a request names a room.
func checkRoomField(f chat.ClientFrame) *chat.ErrorFrame {
	switch {
	case f.Room == "":
		return refusal(f.ID, chat.CodeMissingField, `"room" is required: the room's id`)
	case chat.ValidID(f.Room) != nil:
		return unknownRoom(f.ID, f.Room)
	}
	return nil
}

// roomRefusal is the error frame of a room change that failed.
func (g *Gateway) roomRefusal(id, room string, err error) chat.ErrorFrame {
	var quota errCreateQuota
	switch {
	case errors.As(err, &quota):
		wait := max(time.Until(quota.at), time.Second)
		return quotaRefusal(id, wait, fmt.Sprintf("at most %d new rooms an hour; the next in %d s", g.limits.RoomCreatesPerHour, seconds(wait)))
	case errors.Is(err, errUnknownRoom):
		return *unknownRoom(id, room)
	case errors.Is(err, errTooManyRooms):
		return errorFrame(id, chat.CodeTooManyRooms, fmt.Sprintf("you are in %d rooms, the limit: leave one first", g.limits.RoomsPerUser))
	case errors.Is(err, errRoomFull):
		return errorFrame(id, chat.CodeRoomFull, fmt.Sprintf("the room has %d members, the limit", g.limits.RoomMembersMax))
	}
	g.log.Warn("room change failed", "room", room, "err", err)
	return errorFrame(id, chat.CodeUnavailable, "rooms unreachable; retry")
}
