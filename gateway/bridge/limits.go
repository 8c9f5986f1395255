package bridge

import (
	"fmt"
	"time"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/config"
)

// Limits are the per-socket limits, each a flag.
type Limits struct {
	MaxFrameBytes  int           // bigger client frames close the socket with 1009
	MaxTextChars   int           // longest message text, in characters
	SendRate       float64       // client frames per second, sustained, per socket
	SendBurst      int           // client frames allowed at once above the rate
	FloodStrikes   int           // rate-limited frames in a row before close 4008
	QueueLen       int           // queued server objects before close 4009
	QueueBytes     int           // queued server bytes before close 4009
	SocketsPerUser int           // open sockets per user, on all gateways; more are refused with 429
	HistoryBytes   int           // largest history answer's messages, in bytes; a page is cut there (more: true)
	HistoryCost    int           // rate-limit tokens one history request takes (a send takes one)
	PingInterval   time.Duration // ping period; a socket silent for two is dropped
	MaxReplay      int           // messages one resume replays at most
	WriteDelay     time.Duration // a busy socket waits out this long since its last write (0: no delay; see wsconn.Server)

	UserSendsPerMinute int // sends per user per minute, on all sockets and gateways
	UserBytesPerHour   int // stored bytes of messages per user per hour, on all sockets and gateways

	RoomsPerUser       int // rooms a user is in, besides the lobby
	RoomCreatesPerHour int // rooms a user creates per hour
	RoomMembersMax     int // members of one room
	TypingRoomMax      int // typing is relayed in rooms of at most this many members
	InvitesPerHour     int // invites a user sends per hour
	PresenceListMax    int // beyond this many online, sockets get their contacts and the count (0: everyone, always)
}

// rooms are the room limits the store enforces.
func (l Limits) rooms() roomLimits {
	return roomLimits{perUser: l.RoomsPerUser, createsPerHour: l.RoomCreatesPerHour, maxMembers: l.RoomMembersMax}
}

// maxWriteDelay bounds WRITE_DELAY: it is latency every message pays.
const maxWriteDelay = 100 * time.Millisecond

// Flags defines the limits' settings, each a flag with its variable.
func (l *Limits) Flags(fs *config.Set) {
	fs.Int(&l.MaxFrameBytes, "max-frame-bytes", "MAX_FRAME_BYTES", chat.MaxFrameBytes, "largest client frame; bigger ones close the socket with 1009")
	fs.Int(&l.MaxTextChars, "max-text-chars", "MAX_TEXT_CHARS", chat.MaxTextChars, "longest message text, in characters")
	fs.Float(&l.SendRate, "send-rate", "SEND_RATE", 10, "client frames per second per socket, sustained")
	fs.Int(&l.SendBurst, "send-burst", "SEND_BURST", 30, "client frames per socket allowed at once above the rate")
	fs.Int(&l.FloodStrikes, "flood-strikes", "FLOOD_STRIKES", 20, "rate-limited frames in a row before close 4008")
	fs.Int(&l.QueueLen, "send-queue", "SEND_QUEUE", 1024, "server objects queued per socket before close 4009")
	fs.Int(&l.QueueBytes, "send-queue-bytes", "SEND_QUEUE_BYTES", 4<<20, "server bytes queued per socket before close 4009")
	fs.Int(&l.SocketsPerUser, "sockets-per-user", "SOCKETS_PER_USER", 20, "open sockets per user on all gateways; more get 429")
	fs.Int(&l.HistoryBytes, "history-max-bytes", "HISTORY_MAX_BYTES", 256<<10, "largest history answer in bytes; a longer page is cut (more)")
	fs.Int(&l.HistoryCost, "history-cost", "HISTORY_COST", 5, "send-rate tokens one history request takes (at most SEND_BURST)")
	fs.Int(&l.MaxReplay, "max-replay", "MAX_REPLAY", 5000, "messages one resume replays at most (then complete=false)")
	fs.Duration(&l.PingInterval, "ping-interval", "PING_INTERVAL", 25*time.Second, "websocket ping period; silent for two, a socket is dropped")
	fs.Int(&l.UserSendsPerMinute, "user-sends-per-minute", "USER_SENDS_PER_MINUTE", 600, "sends per user per minute, all sockets and gateways")
	fs.Int(&l.UserBytesPerHour, "user-bytes-per-hour", "USER_BYTES_PER_HOUR", 16<<20, "stored message bytes per user per hour, all sockets and gateways")
	fs.Int(&l.RoomsPerUser, "rooms-per-user", "ROOMS_PER_USER", 200, "rooms a user is in besides the lobby; more get too_many_rooms")
	fs.Int(&l.RoomCreatesPerHour, "room-creates-per-hour", "ROOM_CREATES_PER_HOUR", 10, "rooms a user creates per hour; more get quota_exceeded")
	fs.Int(&l.RoomMembersMax, "room-members-max", "ROOM_MEMBERS_MAX", 10000, "members of one room; more get room_full")
	fs.Int(&l.InvitesPerHour, "invites-per-hour", "INVITES_PER_HOUR", 60, "room invites a user sends per hour, all gateways; more get quota_exceeded")
	fs.Int(&l.PresenceListMax, "presence-list-max", "PRESENCE_LIST_MAX", 200, "beyond this many online a socket gets its contacts and the count (0: always everyone)")
	fs.Int(&l.TypingRoomMax, "typing-room-max", "TYPING_ROOM_MAX", 200, "typing is relayed in rooms of at most this many members")
	fs.Duration(&l.WriteDelay, "write-delay", "WRITE_DELAY", 0, "a busy socket's next write waits this long after its last (0: off; max 100ms)")
}

// Validate checks the limits are usable together.
func (l Limits) Validate() error {
	// A history answer, or one message at its longest, must fit in a
	// queue with room to spare, or a reader keeping up would be closed.
	if l.QueueBytes < 2*max(l.HistoryBytes, maxMessageFrame(l.MaxTextChars), maxConversationsFrame) {
		return fmt.Errorf("send queue bytes %d: want at least twice the history answer (%d), the longest message frame (%d) and a page of conversations (%d)",
			l.QueueBytes, l.HistoryBytes, maxMessageFrame(l.MaxTextChars), maxConversationsFrame)
	}
	// One message at its longest must fit in a user's hourly bytes.
	if l.UserSendsPerMinute < 1 || l.UserBytesPerHour < maxMessageFrame(l.MaxTextChars) {
		return fmt.Errorf("user sends per minute %d, user bytes per hour %d: want at least 1 and %d (the longest message frame)",
			l.UserSendsPerMinute, l.UserBytesPerHour, maxMessageFrame(l.MaxTextChars))
	}
	if l.RoomsPerUser < 0 || l.RoomCreatesPerHour < 0 || l.RoomMembersMax < 1 || l.TypingRoomMax < 0 || l.InvitesPerHour < 1 || l.PresenceListMax < 0 {
		return fmt.Errorf("rooms per user %d, room creates per hour %d, room members max %d, typing room max %d, invites per hour %d, presence list max %d: want none negative, a room of at least 1 and at least 1 invite",
			l.RoomsPerUser, l.RoomCreatesPerHour, l.RoomMembersMax, l.TypingRoomMax, l.InvitesPerHour, l.PresenceListMax)
	}
	if l.HistoryBytes < 1 || l.HistoryCost < 1 || l.SocketsPerUser < 1 {
		return fmt.Errorf("history bytes %d, history cost %d, sockets per user %d: want each positive", l.HistoryBytes, l.HistoryCost, l.SocketsPerUser)
	}
	if l.MaxFrameBytes < 1024 || l.MaxTextChars < 1 || l.SendRate <= 0 || l.SendBurst < 1 || l.FloodStrikes < 1 || l.QueueLen < 1 ||
		l.PingInterval < time.Second || l.MaxReplay < 1 || l.WriteDelay < 0 || l.WriteDelay > maxWriteDelay {
		return fmt.Errorf("websocket limits out of range: %+v", l)
	}
	return nil
}

// maxConversationsFrame bounds a page of conversations: each item a
// preview and two users, with room to spare.
const maxConversationsFrame = conversationsPage * (6*chat.PreviewChars + 1024)

// maxMessageFrame bounds the encoded delivery frame of a message of
// chars characters: each may take 6 bytes in JSON (a control character
// as \u0001), plus the frame's other fields (ids, names, time).
func maxMessageFrame(chars int) int { return 6*chars + 1024 }

// Validate checks the configuration is usable together.
func (c Config) Validate() error {
	if c.Heartbeat <= 0 || c.Heartbeat >= c.Presence.TTL {
		return fmt.Errorf("presence heartbeat %s must be shorter than the presence TTL %s", c.Heartbeat, c.Presence.TTL)
	}
	if c.Stream.Retention > 0 && c.Stream.DedupeWindow > c.Stream.Retention {
		return fmt.Errorf("chat dedupe window %s is longer than the retention %s", c.Stream.DedupeWindow, c.Stream.Retention)
	}
	return c.Limits.Validate()
}
