package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"time"
)

// The browser protocol: JSON text frames over the gateway's /ws. Every
// frame is an object with a "type". A client frame holds one object; a
// server frame may hold several, separated by '\n' (the gateway coalesces
// writes), so clients split server frames on '\n'.
//
// Handshake: GET /ws upgrades only with a valid, unrevoked token (the
// [TokenCookie] cookie, or Authorization: Bearer) and, from a browser, an
// allowed Origin. Otherwise it answers with a JSON error body and never
// upgrades: 401 unauthorized (no token, or a bad, expired or revoked
// one), 403 forbidden_origin, 429 too_many_sockets (the user has the
// gateway's SOCKETS_PER_USER (20 by default) sockets open already: exactly
// on this gateway, and across gateways as presence counts them, so
// handshakes racing on different gateways can pass the limit by as many
// as are in flight), 503 unavailable (the gateway is starting, or the
// stream is unreachable).
//
// Client frames:
//
//	{"type":"send","id":"m1","to":{"room":"lobby"},"text":"hello"}
//	{"type":"send","id":"m2","to":{"user":"u7"},"text":"psst"}
//	{"type":"history","id":"h1","to":{"user":"u7"},"before":0,"limit":50}
//	{"type":"resume","after":41}
//	{"type":"read","to":{"user":"u7"},"seq":57}
//	{"type":"conversations","id":"c2","before":40}
//	{"type":"typing","to":{"user":"u7"}}
//	{"type":"room_create","id":"r1","name":"Go fans","visibility":"public"}
//	{"type":"rooms","id":"r2","query":"go","offset":0}
//	{"type":"join","id":"r3","room":"r0a1b2c3d4e5f6a7b8"}
//	{"type":"leave","id":"r4","room":"r0a1b2c3d4e5f6a7b8"}
//	{"type":"invite","id":"r5","room":"r0a1b2c3d4e5f6a7b8","user":"u7"}
//	{"type":"members","id":"r6","room":"r0a1b2c3d4e5f6a7b8","offset":0}
//	{"type":"online","id":"o1","query":"ali","offset":0}
//
// Server frames:
//
//	{"type":"hello","user":{"id":"u1","name":"Alice","account":"alice"},"rooms":["lobby"],"seq":42,"limits":{...}}
//	{"type":"ack","id":"m1","seq":43}
//	{"type":"message","seq":43,"id":"m1","from":{"id":"u1","name":"Alice","account":"alice"},"to":{"room":"lobby"},"text":"hello","ts":"2026-11-25T22:00:00Z"}
//	{"type":"error","id":"m1","code":"text_too_long","message":"..."}
//	{"type":"error","id":"m9","code":"quota_exceeded","message":"...","retry_after":42}
//	{"type":"history","id":"h1","to":{"user":"u7"},"messages":[{"type":"message",...}],"more":true}
//	{"type":"resumed","seq":57,"complete":true}
//	{"type":"presence","users":[{"id":"u1","name":"Alice","account":"alice"}]}
//	{"type":"presence","user":{"id":"u2","name":"Bob","account":"bob"},"online":true}
//	{"type":"presence","users":[...],"partial":true,"total":15000}
//	{"type":"online_count","total":15001}
//	{"type":"online","id":"o1","users":[...],"total":3,"more":false,"next":3}
//	{"type":"conversations","items":[{"to":{"user":"u7"},"title":"Bob","user":{...},"last":{"seq":57,"from":{...},"text":"...","ts":"..."},"read":55,"unread":2}],"more":false}
//	{"type":"read","to":{"user":"u7"},"seq":57,"unread":0}
//	{"type":"seen","to":{"user":"u7"},"seq":57}
//	{"type":"typing","to":{"user":"u1"},"user":{"id":"u1","name":"Alice","account":"alice"}}
//	{"type":"room","id":"r1","room":{"id":"r0a1b2c3d4e5f6a7b8","name":"Go fans","visibility":"public","owner":"u1","members":1}}
//	{"type":"rooms","id":"r2","rooms":[{"id":...,"name":...,"visibility":"public","members":12}],"more":false,"next":50}
//	{"type":"joined","room":{"id":...,"name":...,"visibility":...,"members":13},"conversation":{"to":{"room":...},"title":...,"last":{...},"read":0,"unread":12}}
//	{"type":"left","room":{"id":...,"name":...,"visibility":...,"members":12}}
//	{"type":"member","room":"r0a1b2c3d4e5f6a7b8","user":{"id":"u7",...},"joined":true,"members":13}
//	{"type":"invited","room":{...},"by":{"id":"u1",...}}   (to the invited user's sockets)
//	{"type":"invited","id":"r5","room":{...},"user":{"id":"u7",...}}   (to the inviting socket)
//	{"type":"members","id":"r6","room":"r0a1b2c3d4e5f6a7b8","members":[{"user":{...},"online":true}],"total":13,"more":false,"next":100}
//
// Presence: right after hello, the list of everyone online; then one frame
// per change. Every socket of every user converges to the same list.
// Beyond the gateway's PRESENCE_LIST_MAX online (200 by default) the list
// is partial: a socket gets its user's contacts who are online (the
// people they have direct conversations with and the members of their
// rooms of up to [PresenceRoomMembers]; at most PRESENCE_LIST_MAX of them)
// with the total, changes of those contacts only (people become contacts
// as conversations begin and rooms fill), and online_count with the total
// at most once a second (on a gateway with over 5,000 sockets, once per
// 5,000 of them a second, at most every 5 s); it stays partial until a
// tenth fewer are online; online searches everyone online by name or
// handle, [OnlinePage] at a time (costs HISTORY_COST). A list frame
// always replaces what the client had.
//
// History: the messages of one conversation the user is part of (a room
// they are in, or their direct conversation with one user) with seq below
// "before" (0: the latest), at most "limit" (1-100, default 50), oldest
// first; "more" says older ones exist. A page also stops before its
// messages pass the gateway's HISTORY_MAX_BYTES (256 KiB by default; at
// least one message is always sent), so a page may hold fewer than the
// limit with more true. The answer echoes the request's optional id. A
// history request costs HISTORY_COST (5) tokens of the send rate; past
// it, an error rate_limited with the request's id.
//
// Conversations: after hello and the online list, a socket gets its
// user's conversations, most recent activity first: the lobby, every
// room they are in and every direct conversation they have had (the stream's own subjects: nothing
// is lost on reload or on another device), each with its latest message
// (text cut to [PreviewChars]), the user's read cursor and how many
// messages follow it. A page holds at most 100; ask for the next with
// before = the last item's last.seq (costs HISTORY_COST, as history
// does).
//
// Read state: read moves the user's cursor of a conversation to the last
// message the client has shown. Cursors only move forward and survive
// restarts; every socket of the user, on every gateway, gets read with
// what is left unread, and in a direct conversation the other person's
// sockets get seen (a read receipt). A seq beyond the stream's last is
// refused with bad_seq.
//
// Typing: in a direct conversation, typing reaches the other person's
// sockets, at most once per [TypingInterval] (3 s) per socket (more are
// dropped); clients drop it [TypingShown] (6 s) after the last. Never
// stored. In a room it reaches the other members' sockets, in rooms of at
// most the gateway's TYPING_ROOM_MAX members (200 by default); in bigger
// rooms, and in the lobby, it is not relayed: there every keystroke
// would reach a crowd.
//
// Rooms: room_create makes a room (name 1-[MaxRoomName] characters,
// visibility public or private) whose first member, and owner, is its
// creator; the answer is room, with the request's id. rooms lists public
// rooms whose name holds query (any case), most members first, and the
// private rooms the user was invited to, [RoomsPage] at a time (ask for
// the next with offset = next). join enters a public room, or a private
// one the user was invited to; leave leaves one (not the lobby: everyone
// is in it, lobby_fixed); invite asks another user into a room the
// inviter is in. Every socket of a user who joins or leaves gets joined or
// left; the room's members get member. members lists a room's members,
// online first, [MembersPage] at a time. Sending to, history of, reading,
// typing in, members of, leaving or inviting into a room the user is not
// in is refused with unknown_room, whether or not it exists: a private
// room one was not invited to cannot be told from no room. The gateway's
// ROOMS_PER_USER (200) bounds the rooms a user is in (too_many_rooms),
// ROOM_CREATES_PER_HOUR (10) the rooms they create (quota_exceeded, with
// when), ROOM_MEMBERS_MAX (10,000) a room's members (room_full). A rooms,
// members or room_create request costs HISTORY_COST of the send rate.
//
// Resume: a reconnecting client sends resume, with the last seq it saw, as
// its first frame, within [HoldTimeout] (1 s) of hello. The gateway
// replays, in order, every stored message the user may see with a larger
// seq, then sends resumed with the last replayed seq, then live messages:
// none missing, none twice. complete is false when messages after "after"
// have already left the stream (retention) or the gap exceeds the
// gateway's MAX_REPLAY (5000 messages by default); the client then has
// what was replayed and can page with history.
//
// Sends may be pipelined: a client need not wait for an ack before its
// next send. A socket's sends are stored and acked in the order sent,
// except that a send refused with unavailable (and retried by the client)
// or republished by the gateway (no stream leader for a moment) may land
// after the ones that followed it; seq gives the stream's order.
//
// A send's id (1-64 letters, digits, '-', '_') is chosen by the client; a
// repeated id from the same user within the stream's dedupe window,
// CHAT_DEDUPE_WINDOW (2 minutes by default), is stored once and acked
// with the first seq. "from" is always the sender's token's user, with
// the token's account handle: names are not unique, handles are.
// A direct message reaches every socket of both users, and no one else.

// Frame types.
const (
	FrameHello    = "hello"
	FrameSend     = "send"
	FrameAck      = "ack"
	FrameMessage  = "message"
	FrameError    = "error"
	FrameHistory  = "history"
	FrameResume   = "resume"
	FrameResumed  = "resumed"
	FramePresence = "presence"
	// Conversations lists the user's conversations (server), or asks for
	// the next page (client).
	FrameConversations = "conversations"
	// Read moves the user's read cursor of a conversation (client), and
	// tells every socket of the user it moved (server).
	FrameRead = "read"
	// Seen tells the other person of a direct conversation how far the
	// reader has read.
	FrameSeen = "seen"
	// Typing says the user is typing in a conversation (client), or that
	// someone is (server).
	FrameTyping = "typing"

	// Rooms (see "Rooms" above).
	FrameRoomCreate = "room_create"
	FrameRoom       = "room"
	FrameRooms      = "rooms"
	FrameJoin       = "join"
	FrameJoined     = "joined"
	FrameLeave      = "leave"
	FrameLeft       = "left"
	FrameInvite     = "invite"
	FrameInvited    = "invited"
	FrameMembers    = "members"
	FrameMember     = "member"

	// OnlineCount updates a partial presence list's total (server);
	// Online searches everyone online (client) and answers (server).
	FrameOnlineCount = "online_count"
	FrameOnline      = "online"
)

// Error codes of error frames; the socket stays open after each.
const (
	CodeBadFrame         = "bad_frame"         // not a JSON object, or a field of the wrong type
	CodeUnknownType      = "unknown_type"      // a type the gateway does not know
	CodeMissingField     = "missing_field"     // a required field is absent or empty
	CodeBadID            = "bad_id"            // a message or user id is not 1-64 [A-Za-z0-9_-]
	CodeBadRecipient     = "bad_recipient"     // "to" names neither or both of room and user
	CodeUnknownRoom      = "unknown_room"      // a room the user is not in
	CodeUnknownRecipient = "unknown_recipient" // no such user
	CodeEmptyText        = "empty_text"        // text empty or only whitespace
	CodeTextTooLong      = "text_too_long"     // more than MaxTextChars characters
	CodeRateLimited      = "rate_limited"      // over the send rate; retry later
	CodeQuotaExceeded    = "quota_exceeded"    // the user's sends per minute or stored bytes per hour are spent; the message says when sending resumes
	CodeUnavailable      = "unavailable"       // storing failed (NATS or auth unreachable); retry
	CodeBadLimit         = "bad_limit"         // history limit outside 1-MaxHistory
	CodeBadSeq           = "bad_seq"           // a read cursor beyond the stream's last message
	CodeResumeLate       = "resume_late"       // resume after another frame or later than HoldTimeout after hello
	CodeBadName          = "bad_name"          // a room name empty or longer than MaxRoomName characters, or with control characters
	CodeBadVisibility    = "bad_visibility"    // a visibility other than public and private
	CodeTooManyRooms     = "too_many_rooms"    // the user is in ROOMS_PER_USER rooms already
	CodeRoomFull         = "room_full"         // the room has ROOM_MEMBERS_MAX members already
	CodeLobbyFixed       = "lobby_fixed"       // leaving, or inviting into, the lobby: everyone is in it
)

// Close codes the gateway ends a socket with (RFC 6455 private range,
// besides 1001 going away on shutdown, 1002 for a frame the websocket
// protocol forbids and 1009 for an oversize frame).
const (
	CloseTokenRevoked = 4001 // the token was revoked (logout, log out everywhere, password change)
	CloseTokenExpired = 4002 // the token expired; log in again
	CloseFlooding     = 4008 // kept sending over the rate limit
	CloseTooSlow      = 4009 // did not read fast enough; its queue filled (objects or bytes)
	ClosePresenceLost = 4010 // its gateway lost contact longer than the presence TTL; reconnect
	// CloseResume: live messages may not have reached the socket, and the
	// gateway could not read them for it: reconnect and resume, which
	// replays the gap from the stream. After its NATS connection was
	// interrupted a gateway reads what it missed itself, its sockets open,
	// and closes them with 4011 only if that fails (the stream unreachable
	// for 20 s, more than 20,000 messages), or for a user whose rooms
	// changed meanwhile; also after live messages were dropped under load.
	CloseResume = 4011
)

// Limits of the browser protocol. MaxTextChars and MaxFrameBytes are the
// defaults of the gateway flags MAX_TEXT_CHARS and MAX_FRAME_BYTES (hello
// tells clients the values in force); the history bounds are fixed.
const (
	// MaxTextChars bounds a message's text, in characters.
	MaxTextChars = 4000
	// MaxFrameBytes bounds a client frame, in bytes; bigger ones close
	// with 1009.
	MaxFrameBytes = 64 << 10
	// MaxHistory bounds the messages of one history answer.
	MaxHistory = 100
	// DefaultHistory is a history request's limit when it gives none.
	DefaultHistory = 50
)

// HoldTimeout is how long after hello a socket's live messages wait for a
// possible resume frame, so that a replay always comes before them; any
// first frame ends the wait sooner. A resume sent later is refused with
// resume_late. It is part of the contract rather than a gateway setting
// because clients rely on it: a resume must follow hello at once.
const HoldTimeout = time.Second

// ClientFrame is any frame a client sends; fields unused by its type are
// ignored.
type ClientFrame struct {
	Type   string  `json:"type"`
	ID     string  `json:"id,omitempty"`
	To     *To     `json:"to,omitempty"`
	Text   string  `json:"text,omitempty"`
	Before uint64  `json:"before,omitempty"` // history
	Limit  int     `json:"limit,omitempty"`  // history
	After  *uint64 `json:"after,omitempty"`  // resume
	Seq    uint64  `json:"seq,omitempty"`    // read

	Room       string `json:"room,omitempty"`       // join, leave, invite, members
	User       string `json:"user,omitempty"`       // invite
	Name       string `json:"name,omitempty"`       // room_create
	Visibility string `json:"visibility,omitempty"` // room_create
	Query      string `json:"query,omitempty"`      // rooms
	Offset     int    `json:"offset,omitempty"`     // rooms, members
}

// Limits tells clients the limits in force, in hello.
type Limits struct {
	MaxTextChars  int     `json:"max_text_chars"`
	MaxFrameBytes int     `json:"max_frame_bytes"`
	SendRate      float64 `json:"send_rate"` // messages per second, sustained
	SendBurst     int     `json:"send_burst"`
}

// HelloFrame is the first frame on every socket.
type HelloFrame struct {
	Type   string   `json:"type"`
	User   User     `json:"user"`
	Rooms  []string `json:"rooms"`
	Seq    uint64   `json:"seq"` // last sequence of the stream at connect
	Limits Limits   `json:"limits"`
}

// AckFrame confirms a send is stored, with its sequence.
type AckFrame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Seq  uint64 `json:"seq"`
}

// ErrorFrame reports a refused client frame.
type ErrorFrame struct {
	Type    string `json:"type"`
	ID      string `json:"id,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// RetryAfter is, on quota_exceeded, in how many seconds the quota
	// allows again (the message says it too, in words).
	RetryAfter int64 `json:"retry_after,omitempty"`
}

// MessageFrame delivers a stored message.
type MessageFrame struct {
	Type string    `json:"type"`
	Seq  uint64    `json:"seq"`
	ID   string    `json:"id"`
	From User      `json:"from"`
	To   To        `json:"to"`
	Text string    `json:"text"`
	TS   time.Time `json:"ts"`
}

// PresenceListFrame is who is online, sent right after hello: everyone,
// while at most the gateway's PRESENCE_LIST_MAX are; beyond, Partial,
// the user's contacts among them (the people they have direct
// conversations with, the members of their rooms of up to
// PresenceRoomMembers), at most PRESENCE_LIST_MAX, with Total the number
// online.
type PresenceListFrame struct {
	Type    string `json:"type"`
	Users   []User `json:"users"`
	Partial bool   `json:"partial,omitempty"`
	Total   int    `json:"total,omitempty"`
}

// OnlineCountFrame tells a socket with a partial list how many are online.
type OnlineCountFrame struct {
	Type  string `json:"type"`
	Total int    `json:"total"`
}

// OnlineFrame answers an online request: a page of everyone online whose
// name or handle holds the query, by name.
type OnlineFrame struct {
	Type  string `json:"type"`
	ID    string `json:"id,omitempty"`
	Users []User `json:"users"`
	Total int    `json:"total"` // matching, on every page
	More  bool   `json:"more"`
	Next  int    `json:"next"`
}

// Presence lists beyond PRESENCE_LIST_MAX online: the rooms whose members
// count as a user's contacts are those of at most PresenceRoomMembers;
// an online answer holds at most OnlinePage users.
const (
	PresenceRoomMembers = 1000
	OnlinePage          = 100
)

// PresenceFrame is one change of the online list.
type PresenceFrame struct {
	Type   string `json:"type"`
	User   User   `json:"user"`
	Online bool   `json:"online"`
}

// HistoryFrame answers a history request.
type HistoryFrame struct {
	Type     string         `json:"type"`
	ID       string         `json:"id,omitempty"` // the request's, echoed
	To       To             `json:"to"`
	Messages []MessageFrame `json:"messages"`
	More     bool           `json:"more"`
}

// ResumedFrame ends a replay; live messages follow.
type ResumedFrame struct {
	Type     string `json:"type"`
	Seq      uint64 `json:"seq"`
	Complete bool   `json:"complete"`
}

// ConversationsFrame lists the user's conversations, most recent activity
// first: the rooms they are in and every direct conversation they have
// had. More pages follow a request with before = the last item's
// last.seq.
type ConversationsFrame struct {
	Type  string         `json:"type"`
	ID    string         `json:"id,omitempty"` // the request's, echoed
	Items []Conversation `json:"items"`
	More  bool           `json:"more"`
}

// Conversation is one entry of a ConversationsFrame.
type Conversation struct {
	To     To           `json:"to"`
	Title  string       `json:"title"`
	User   *User        `json:"user,omitempty"` // the other person of a direct conversation
	Room   *Room        `json:"room,omitempty"` // a room's metadata (not the lobby's)
	Last   *LastMessage `json:"last,omitempty"` // none in a room nobody wrote in yet
	Read   uint64       `json:"read"`           // the user's read cursor: the last seq they were shown
	Unread uint64       `json:"unread"`         // messages after read
	// Seen is, in a direct conversation, the other person's read cursor:
	// the read receipt a fresh list shows (seen frames move it after).
	Seen uint64 `json:"seen,omitempty"`
}

// LastMessage is a conversation's latest message, its text cut to
// PreviewChars characters.
type LastMessage struct {
	Seq  uint64    `json:"seq"`
	From User      `json:"from"`
	Text string    `json:"text"`
	TS   time.Time `json:"ts"`
}

// PreviewChars is the longest text of a LastMessage.
const PreviewChars = 100

// ReadFrame tells every socket of a user that their read cursor of a
// conversation moved to seq, with what is left unread after it.
type ReadFrame struct {
	Type   string `json:"type"`
	To     To     `json:"to"`
	Seq    uint64 `json:"seq"`
	Unread uint64 `json:"unread"`
}

// SeenFrame tells the other person of a direct conversation that the
// reader (To.User, from the recipient's side) has read up to seq.
type SeenFrame struct {
	Type string `json:"type"`
	To   To     `json:"to"`
	Seq  uint64 `json:"seq"`
}

// TypingFrame tells the other person of a direct conversation that User
// is typing there (To, from the recipient's side, names the typist), or a
// room's other members that User is typing in it (To names the room).
// Clients show it for at most TypingShown.
type TypingFrame struct {
	Type string `json:"type"`
	To   To     `json:"to"`
	User User   `json:"user"`
}

// RoomFrame answers room_create with the new room.
type RoomFrame struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
	Room Room   `json:"room"`
}

// RoomsFrame answers rooms: a page of rooms, and the offset of the next.
type RoomsFrame struct {
	Type  string `json:"type"`
	ID    string `json:"id,omitempty"`
	Rooms []Room `json:"rooms"`
	More  bool   `json:"more"`
	Next  int    `json:"next"`
}

// MembershipFrame tells every socket of a user they joined (FrameJoined)
// or left (FrameLeft) a room. A joined frame carries the room's entry of
// the conversation list as a fresh list would show it (its latest
// message, and the user's read cursor, kept from an earlier membership).
type MembershipFrame struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"` // a join's, echoed when answered directly

	Room         Room          `json:"room"`
	Conversation *Conversation `json:"conversation,omitempty"`
}

// MemberFrame tells a room's members that User joined or left it, with
// the member count after.
type MemberFrame struct {
	Type    string `json:"type"`
	Room    string `json:"room"`
	User    User   `json:"user"`
	Joined  bool   `json:"joined"`
	Members int    `json:"members"`
}

// InvitedFrame tells the invited user's sockets of an invite (By set),
// or the inviting socket that it was made (ID and User set).
type InvitedFrame struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
	Room Room   `json:"room"`
	By   *User  `json:"by,omitempty"`
	User *User  `json:"user,omitempty"`
}

// MembersFrame answers members: a page of a room's members, online first.
type MembersFrame struct {
	Type    string       `json:"type"`
	ID      string       `json:"id,omitempty"`
	Room    string       `json:"room"`
	Members []RoomPerson `json:"members"`
	Total   int          `json:"total"`
	More    bool         `json:"more"`
	Next    int          `json:"next"`
}

// RoomPerson is one member in a MembersFrame.
type RoomPerson struct {
	User   User `json:"user"`
	Online bool `json:"online"`
	Owner  bool `json:"owner,omitempty"`
}

// Typing indicators: a socket's typing frames reach others at most once
// per TypingInterval; a client drops an indicator TypingShown after the
// last one.
const (
	TypingInterval = 3 * time.Second
	TypingShown    = 6 * time.Second
)

// NewMessageFrame is the delivery frame of m stored at seq.
func NewMessageFrame(m Message, seq uint64) MessageFrame {
	return MessageFrame{Type: FrameMessage, Seq: seq, ID: m.ID, From: m.From, To: m.To, Text: m.Text, TS: m.TS}
}

// Encode marshals a frame; frames hold only marshalable fields.
func Encode(frame any) []byte {
	// Not HTML-escaped: nothing here is put into HTML, and escaping made
	// a text of 4,000 '<' a stored message of 24 KB. The encoder still
	// escapes newlines and U+2028/2029, so an object stays on one line.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(frame); err != nil {
		panic("chat: unmarshalable frame: " + err.Error())
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})
}

// storedPrefix starts every stored message as Encode writes it (Message's
// first field).
var storedPrefix = []byte(`{"id":`)

// ErrStoredMessage is a stored message not in the form gateways store.
var ErrStoredMessage = errors.New("not a stored message")

// MessageFrameBytes turns a stored message, as Encode wrote it, into its
// delivery frame with seq, without decoding it: the stored object with
// "type" and "seq" added. They go last, where a JSON parser (Go's, the
// browser's) takes them over any key of the same name the stored bytes
// might carry. The object is checked to be valid JSON on one line, so no
// stored bytes can add a line (a frame) of their own.
func MessageFrameBytes(stored []byte, seq uint64) ([]byte, error) {
	stored = bytes.TrimRight(stored, " \t\r")
	if !bytes.HasPrefix(stored, storedPrefix) || !bytes.HasSuffix(stored, []byte{'}'}) ||
		bytes.IndexByte(stored, '\n') >= 0 || !json.Valid(stored) {
		return nil, ErrStoredMessage
	}
	b := make([]byte, 0, len(stored)+40)
	b = append(b, stored[:len(stored)-1]...)
	b = append(b, `,"type":"message","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, '}'), nil
}
