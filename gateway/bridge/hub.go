package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/gateway/wsconn"
	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natsconn"
)

// hub maps what arrives on NATS to the local sockets that should see it.
// A gateway subscribes once per room and once per locally connected user
// (three subjects: the user is either side of a sorted dm pair, and their
// user events: read cursors, receipts, typing), decodes and
// encodes each message once, and fans the same bytes out to every local
// socket concerned. The room's and the users' subscriptions all deliver to
// one channel (live), emptied by one goroutine into an unbounded queue that
// another dispatches: a subscription with a callback would hold a
// goroutine per subscription, three per connected user, and one channel
// keeps the order the server sent them in, which is the stream's. A
// socket's live messages then come in seq order across conversations, as
// resume needs (a client resumes after the highest seq it saw: a room
// message delivered after a later dm would be lost by a reconnect between
// the two).
type hub struct {
	log *slog.Logger
	nc  *nats.Conn
	m   *metrics

	mu      sync.RWMutex
	local   map[*client]struct{}            // every socket here (all are in the lobby)
	users   map[string]*localUser           // user id -> their sockets here
	tokens  map[string]map[*client]struct{} // token id -> sockets opened with it
	subs    []*nats.Subscription            // hub-wide: rooms, revocations, presence
	roomSub *nats.Subscription              // the lobby's live messages, into live

	// liveSeqs finds the stored messages a subscription missed, and
	// readStored (nil: gaps are not filled) reads them, unless a read
	// failed before gapsPausedUntil (the dispatcher's own): see
	// livegaps.go.
	liveSeqs        liveSeqs
	readStored      storedReader
	gapsPausedUntil time.Time

	// After a NATS reconnect the dispatcher catches up (catchup.go):
	// readSince reads the stream (set in setup, under mu; nil: every
	// socket resumes instead), from above highest, the highest stored seq
	// dispatched; streamSeen is the highest seq of the stream the hub
	// knows of (dispatched, or a handshake's); reconnectsSeen is the
	// connection's reconnect count the dispatcher last saw; chunk bounds
	// what a catch-up queues to each socket at once.
	readSince      streamReader
	highest        atomic.Uint64
	streamSeen     atomic.Uint64
	reconnectsSeen uint64
	chunk          queueShare
	presenceSync   chan struct{} // (cap 1) asks syncPresence to read the list now

	// Rooms beyond the lobby that local users are in: subscribed while
	// one of their members is connected here (see hubrooms.go).
	rooms    map[string]*localRoom
	subRooms map[*nats.Subscription]string // a room subscription -> its room
	// loadRooms reads the rooms a user is in (set before any socket
	// joins; nil: none); reconcileMu orders the re-reads after
	// membership events.
	loadRooms   func(ctx context.Context, user string) ([]string, error)
	reconcileMu sync.Mutex
	// membersChanged is told of a room whose members changed (a member
	// event), so a cached member list goes; set before sockets join.
	membersChanged func(room string)

	// Partial presence (see contacts.go): presMax is PRESENCE_LIST_MAX
	// (0: always everyone); partial, the mode of the last batch sent;
	// changes, the pending batch's changes one by one; contactOf, who has
	// whom as a contact here; onlineKeys, each online user's name and
	// handle in lower case, and byName everyone online by name (rebuilt
	// when nil), for search.
	presMax        int
	partial        bool
	changes        []presChange
	contactOf      map[string]map[string]struct{}
	loadContacts   func(ctx context.Context, user string) ([]string, error)
	contactsQ      chan string     // users whose contacts to read (see queueContacts)
	contactsMu     sync.Mutex      // guards contactsQueued
	contactsQueued map[string]bool // users in contactsQ
	onlineKeys     map[string]string
	byName         []chat.User
	countSent      time.Time // when sockets were last sent the total
	countLater     bool      // a held-back total is scheduled

	online    map[string]chat.User // who is online, everywhere
	presRev   uint64               // presence bucket revision the list is as of
	listFrame []byte               // online as a list frame, as of the last batch sent

	// Presence changes go out in batches (see presenceBatch): pending
	// holds the changes since the last batch, '\n'-separated objects,
	// never modified once written (sockets may hold a prefix); presSent
	// counts batches sent; flushing says one is scheduled.
	pending  []byte
	presSent uint64 // presence batches sent
	flushing bool

	live        chan *nats.Msg // the room's and every user subscription's messages, in arrival order
	liveMu      sync.Mutex     // guards livePending
	livePending []*nats.Msg    // taken from live, not yet dispatched
	liveReady   chan struct{}  // (cap 1) livePending has messages
	roomLineup  wsconn.Lineup  // onRoom's sockets to write, reused (onRoom runs on dispatchLive' goroutine)
	stop        chan struct{}  // ends takeLive and dispatchLive
}

// liveQueueLen is the capacity of live. takeLive empties it as fast as NATS
// fills it, so it is full only if that goroutine is starved for as long
// as the channel takes to fill; then the client library drops messages
// for this gateway (a slow consumer, see onSlowConsumer).
const liveQueueLen = 64 << 10

// subscribeTimeout bounds the round trip that confirms a user's
// subscriptions with the server.
const subscribeTimeout = 2 * time.Second

type localUser struct {
	clients  map[*client]struct{}
	subs     []*nats.Subscription
	rooms    map[string]struct{} // the rooms they are in, besides the lobby
	contacts map[string]struct{} // whose presence matters to them (partial mode)
}

// presChange is one presence change of a batch: whose, and its frame.
type presChange struct {
	user string
	line []byte
}

// storedReader reads the first message stored on subject at or after
// from, from the stream's leader.
type storedReader func(ctx context.Context, subject string, from uint64) (storedMsg, error)

func newHub(log *slog.Logger, nc *nats.Conn, m *metrics, lim Limits, readStored storedReader) (*hub, error) {
	h := &hub{log: log, nc: nc, m: m, presMax: lim.PresenceListMax, readStored: readStored, chunk: quarterOf(lim), local: map[*client]struct{}{}, users: map[string]*localUser{},
		tokens: map[string]map[*client]struct{}{}, online: map[string]chat.User{},
		rooms: map[string]*localRoom{}, subRooms: map[*nats.Subscription]string{}, contactOf: map[string]map[string]struct{}{}, onlineKeys: map[string]string{},
		contactsQ: make(chan string, contactsQueue), contactsQueued: map[string]bool{},
		live: make(chan *nats.Msg, liveQueueLen), liveReady: make(chan struct{}, 1), stop: make(chan struct{}),
		presenceSync: make(chan struct{}, 1), reconnectsSeen: nc.Stats().Reconnects}
	room, err := chat.RoomSubject(chat.Lobby)
	if err != nil {
		return nil, err
	}
	for subj, cb := range map[string]nats.MsgHandler{
		chat.AuthRevokedSubject:      h.onRevoked,
		chat.PresenceChangedSubjects: h.onPresence,
	} {
		sub, err := nc.Subscribe(subj, cb)
		if err != nil {
			h.close()
			return nil, err
		}
		// A slow hub must not be cut off by the client library's defaults.
		_ = sub.SetPendingLimits(-1, -1)
		h.subs = append(h.subs, sub)
	}
	// The room's messages share the users' channel: see hub.
	sub, err := nc.ChanSubscribe(chat.LivePrefix+room, h.live)
	if err != nil {
		h.close()
		return nil, err
	}
	h.roomSub = sub
	h.subs = append(h.subs, sub)
	h.liveSeqs.track(0, sub)
	// A reconnect's catch-up must not wait for the next message.
	natsconn.OnReconnect(nc, h.wake)
	go h.takeLive()
	go h.dispatchLive()
	for range contactsWorkers {
		go h.readContacts()
	}
	return h, nil
}

func (h *hub) close() {
	unsubscribe(h.subs)
	close(h.stop)
}

// takeLive moves what the users' subscriptions receive from live to
// livePending, unbounded like a callback subscription's pending list: it
// does nothing else, so live does not fill while dispatching is slow.
func (h *hub) takeLive() {
	for {
		select {
		case m := <-h.live:
			h.liveMu.Lock()
			h.livePending = append(h.livePending, m)
			h.liveMu.Unlock()
			select {
			case h.liveReady <- struct{}{}:
			default:
			}
		case <-h.stop:
			return
		}
	}
}

// dispatchLive delivers the pending room and direct messages, in arrival
// order, each after those its subscription missed before it (see
// livegaps.go), and after a NATS reconnect first those stored while the
// connection was down (see catchup.go).
func (h *hub) dispatchLive() {
	var msgs []*nats.Msg
	var dms dmFrames
	for {
		select {
		case <-h.liveReady:
		case <-h.stop:
			return
		}
		h.liveMu.Lock()
		msgs, h.livePending = h.livePending, msgs[:0]
		h.liveMu.Unlock()
		if h.reconnected() {
			h.catchUp() // before anything that came after the reconnect
		}
		for i, m := range msgs {
			msgs[i] = nil
			missed, deliver := h.fillGap(m)
			for _, mm := range missed {
				h.dispatch(mm, &dms)
			}
			if deliver {
				h.dispatch(m, &dms)
			}
		}
		if cap(msgs) > liveQueueLen {
			msgs = nil // a burst's queue is not kept
		}
	}
}

// dmFrames keeps the last dm's frame: a dm between two users of this
// gateway arrives once per user's subscription, one copy after the
// other, and its frame is built once.
type dmFrames struct {
	frame []byte
	seq   uint64
}

// dispatch delivers one message of the hub's subscriptions.
func (h *hub) dispatch(m *nats.Msg, dms *dmFrames) {
	if m.Sub != nil && m.Sub == h.roomSub {
		h.onRoom(m)
		return
	}
	if room, ok := h.subRoom(m.Sub); ok {
		h.onMemberRoom(room, m)
		return
	}
	if strings.HasPrefix(m.Subject, roomLivePrefix) || strings.HasPrefix(m.Subject, chat.RoomEventsPrefix) {
		return // of a room unsubscribed since: its last member here left
	}
	if user, ok := strings.CutPrefix(m.Subject, chat.UserEventsPrefix); ok {
		h.applyMembership(user, m.Data)
		h.deliverUserEvent(user, m.Sub, m.Data)
		return
	}
	user, ok := dmRecipient(m)
	if !ok {
		return
	}
	seq, ok := h.liveSeq(m)
	if !ok {
		return
	}
	if dms.frame == nil || seq != dms.seq {
		if dms.frame, ok = h.frameAt(m, seq); !ok {
			dms.frame = nil
			return
		}
		dms.seq = seq
	}
	if h.deliverDM(user, m.Sub, dms.frame, seq) {
		h.noteContact(user, dmPartner(m.Subject, user))
	}
}

// dmPrefix starts the live subjects of direct messages.
const dmPrefix = chat.LivePrefix + "chat.dm."

// dmRecipient is the user whose subscription received m: chat.dm.<lo>.<hi>
// reaches lo through "<lo>.*" and hi through "*.<hi>"; a note to self
// matches both and is delivered from the first.
func dmRecipient(m *nats.Msg) (string, bool) {
	if m.Sub == nil {
		return "", false
	}
	user, lo := subscriptionUser(m.Sub.Subject)
	return user, lo || !strings.HasPrefix(m.Subject, dmPrefix+user+".")
}

// subscriptionUser is the user of a dm subscription, and whether it is
// their "<lo>.*" one (else "*.<hi>").
func subscriptionUser(subject string) (string, bool) {
	pattern := strings.TrimPrefix(subject, dmPrefix)
	if lo, ok := strings.CutSuffix(pattern, ".*"); ok {
		return lo, true
	}
	return strings.TrimPrefix(pattern, "*."), false
}

// onSlowConsumer handles live messages dropped (live was full: see
// liveQueueLen): room messages dropped concern every socket here, direct
// messages dropped for a user that user's sockets. Those sockets stop
// getting live messages and are closed for resume, which replays the
// dropped ones unless a live message stored after them reached the socket
// before this report (the library reports a drop a moment later, on its
// own goroutine). A user's subscriptions end, so their next socket here
// subscribes afresh: the library reports only the first drop until a
// subscription delivers again.
func (h *hub) onSlowConsumer(sub *nats.Subscription) {
	if sub != nil && sub == h.roomSub {
		h.log.Error("room messages dropped under load; closing every socket for resume")
		h.mu.RLock()
		defer h.mu.RUnlock()
		for c := range h.local {
			c.frozen.Store(true)
			c.conn.Close(chat.CloseResume, "messages dropped under load: resume")
		}
		return
	}
	if room, ok := h.subRoom(sub); ok {
		h.roomDropped(room)
		return
	}
	if sub == nil || !strings.HasPrefix(sub.Subject, dmPrefix) {
		return
	}
	user, _ := subscriptionUser(sub.Subject)
	h.log.Error("direct messages dropped under load; closing the user's sockets for resume", "user", user)
	h.mu.Lock()
	defer h.mu.Unlock()
	u := h.users[user]
	if u == nil {
		return
	}
	for c := range u.clients {
		c.frozen.Store(true)
		c.conn.Close(chat.CloseResume, "messages dropped under load: resume")
	}
	h.dropUser(user, u)
}

// join registers c and queues hello (made for the rooms its user is in)
// then the online list, so every presence change after the list follows
// it; its user's dm and room subscriptions start with their first socket
// here.
func (h *hub) join(c *client, hello func(rooms []string) []byte) error {
	fresh, err := h.register(c, hello)
	h.flushRooms(fresh)
	return err
}

// register is join under the lock; fresh says it subscribed to rooms.
// A user's rooms are read after their events are subscribed to, so a
// membership change made meanwhile is either in what is read or arrives
// after it.
func (h *hub) register(c *client, hello func(rooms []string) []byte) (fresh bool, err error) {
	id := c.user.ID
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.users[id] == nil {
		// Subscribing and reading take round trips to the server: not
		// under the lock, which every delivery needs.
		h.mu.Unlock()
		subs, rooms, err := h.subscribeUser(id)
		h.mu.Lock()
		if err != nil {
			return false, err
		}
		if h.users[id] != nil { // another socket of the user won the race
			h.liveSeqs.forget(subs)
			unsubscribe(subs)
			break
		}
		u := &localUser{clients: map[*client]struct{}{}, subs: subs, rooms: map[string]struct{}{}}
		h.users[id] = u
		for _, r := range rooms {
			fresh = h.enter(id, u, r) || fresh
		}
	}
	if h.wantContacts() && h.users[id].contacts == nil {
		h.queueContacts(id) // also for a later socket, should the first read have failed
	}
	u := h.users[id]
	u.clients[c] = struct{}{}
	h.local[c] = struct{}{}
	c.send(hello(slices.Sorted(maps.Keys(u.rooms))), nil)
	h.presenceOnJoin(c)
	if h.tokens[c.claims.ID] == nil {
		h.tokens[c.claims.ID] = map[*client]struct{}{}
	}
	h.tokens[c.claims.ID][c] = struct{}{}
	h.m.sockets.Inc()
	return fresh, nil
}

// subscribeUser subscribes to the live dm subjects of user id and to
// their user events (read cursors, receipts, typing), and waits until the server
// has the subscriptions, so nothing sent to the user after their hello
// can miss them; then reads the rooms they are in.
func (h *hub) subscribeUser(id string) ([]*nats.Subscription, []string, error) {
	floor := h.streamSeen.Load()
	var subs []*nats.Subscription
	// chat.dm.<lo>.<hi>: the user is lo in "<id>.*" and hi in "*.<id>"
	// (dmRecipient).
	events, err := chat.UserEventsSubject(id)
	if err != nil {
		return nil, nil, err
	}
	for _, subject := range []string{dmPrefix + id + ".*", dmPrefix + "*." + id, events} {
		s, err := h.nc.ChanSubscribe(subject, h.live)
		if err != nil {
			unsubscribe(subs)
			return nil, nil, err
		}
		subs = append(subs, s)
	}
	if err := h.nc.FlushTimeout(subscribeTimeout); err != nil {
		unsubscribe(subs)
		return nil, nil, fmt.Errorf("subscribe %s: %w", id, err)
	}
	rooms, err := h.roomsFromStore(id)
	if err != nil {
		unsubscribe(subs)
		return nil, nil, fmt.Errorf("rooms of %s: %w", id, err)
	}
	h.liveSeqs.track(floor, subs...)
	return subs, rooms, nil
}

func unsubscribe(subs []*nats.Subscription) {
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
}

// leave unregisters c; its user's subscriptions end with their last socket.
func (h *hub) leave(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.local[c]; !ok {
		return
	}
	delete(h.local, c)
	// The user's entry may be a newer one (onSlowConsumer replaced it);
	// it holds that newer socket, so it outlives this one leaving.
	if u := h.users[c.user.ID]; u != nil {
		delete(u.clients, c)
		if len(u.clients) == 0 {
			h.dropUser(c.user.ID, u)
		}
	}
	if t := h.tokens[c.claims.ID]; t != nil {
		delete(t, c)
		if len(t) == 0 {
			delete(h.tokens, c.claims.ID)
		}
	}
	h.m.sockets.Dec()
}

// frame turns a republished message into its encoded delivery frame.
func (h *hub) frame(m *nats.Msg) ([]byte, uint64, bool) {
	seq, ok := h.liveSeq(m)
	if !ok {
		return nil, 0, false
	}
	b, ok := h.frameAt(m, seq)
	return b, seq, ok
}

// liveSeq is a republished message's stream sequence.
func (h *hub) liveSeq(m *nats.Msg) (uint64, bool) {
	seq, err := strconv.ParseUint(m.Header.Get(chat.SequenceHeader), 10, 64)
	if err != nil {
		h.log.Error("live message without sequence", "subject", m.Subject)
		return 0, false
	}
	return seq, true
}

// frameAt encodes m, stored at seq, as its delivery frame.
func (h *hub) frameAt(m *nats.Msg, seq uint64) ([]byte, bool) {
	b, err := chat.MessageFrameBytes(m.Data, seq)
	if err != nil {
		h.log.Error("undecodable stored message", "subject", m.Subject, "seq", seq, "err", err)
		return nil, false
	}
	return b, true
}

// messageFrame decodes a stored message into its delivery frame.
func messageFrame(data []byte, seq uint64) (chat.MessageFrame, error) {
	var msg chat.Message
	if err := json.Unmarshal(data, &msg); err != nil {
		return chat.MessageFrame{}, err
	}
	return chat.NewMessageFrame(msg, seq), nil
}

func (h *hub) onRoom(m *nats.Msg) {
	b, seq, ok := h.frame(m)
	if !ok {
		return
	}
	h.mu.RLock()
	for c := range h.local {
		c.deliver(b, seq, &h.roomLineup)
	}
	h.mu.RUnlock()
	h.roomLineup.Flush()
}

// deliverUserEvent queues a frame another gateway (or this one) published
// for every socket of user (chat.UserEventsSubject) to user's sockets
// here, if it came through their current subscription (see deliverDM).
func (h *hub) deliverUserEvent(user string, sub *nats.Subscription, frame []byte) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if u := h.users[user]; u != nil && slices.Contains(u.subs, sub) {
		for c := range u.clients {
			c.send(frame, nil)
		}
	}
}

// deliverDM queues a dm's frame to user's sockets here, and says whether
// it did. Only what came through the user's current subscriptions is
// delivered: two sockets of a user joining at once both subscribe, and
// the loser's subscriptions may already have queued what the winner's
// did too. (After a user's last socket left, what their subscriptions
// queued is dropped as well: a socket that comes back resumes.)
func (h *hub) deliverDM(user string, sub *nats.Subscription, b []byte, seq uint64) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	u := h.users[user]
	if u == nil || !slices.Contains(u.subs, sub) {
		return false
	}
	for c := range u.clients {
		c.deliver(b, seq, nil)
	}
	return true
}

// onRevoked closes the sockets a revocation covers: those opened with a
// revoked token, or those of a user opened with a token issued up to the
// user's revocation.
func (h *hub) onRevoked(m *nats.Msg) {
	var r chat.Revocation
	if err := json.Unmarshal(m.Data, &r); err != nil || (r.TokenID == "" && r.IssuedThrough.IsZero()) {
		h.log.Warn("undecodable revocation", "err", err)
		return
	}
	if r.TokenID != "" {
		h.closeToken(r.TokenID)
		return
	}
	h.closeUser(r.User, func(c *client) bool { return r.RevokesIssuedAt(issuedAt(c.claims)) })
}

// closeToken closes the sockets a key of the revoked bucket revokes: the
// sockets opened with that token id, or, for a user's key, the user's
// sockets whose token the revocation set (which holds the user's
// revocation by then: see watchRevocations) says is revoked. c.gw.revoked
// is set in setup, before the gateway is ready, so before any socket is
// registered here.
func (h *hub) closeToken(key string) {
	if user, ok := chat.RevokedKeyUser(key); ok {
		h.closeUser(user, func(c *client) bool { return c.gw.revoked.revokes(c.claims) })
		return
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.tokens[key] {
		c.conn.Close(chat.CloseTokenRevoked, "token revoked")
	}
}

// closeUser closes the sockets of user here whose token is revoked.
func (h *hub) closeUser(user string, revoked func(*client) bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if u := h.users[user]; u != nil {
		for c := range u.clients {
			if revoked(c) {
				c.conn.Close(chat.CloseTokenRevoked, "token revoked")
			}
		}
	}
}

// freezeAll stops live delivery to every socket, before they are closed
// for resume: what they would get next may come after a gap, and a
// socket that saw it would resume past the gap.
func (h *hub) freezeAll() {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.local {
		c.frozen.Store(true)
	}
}

// closeAll closes every socket with code (gateway shutdown, NATS
// reconnect) and says how many it closed.
func (h *hub) closeAll(code int, text string) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.local {
		c.conn.Close(code, text)
	}
	return len(h.local)
}
