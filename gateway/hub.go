package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/services/chat"
)

// hub maps what arrives on NATS to the local sockets that should see it.
// A gateway subscribes once per room and once per locally connected user
// (two subjects: the user is either side of a sorted dm pair), decodes and
// encodes each message once, and fans the same bytes out to every local
// socket concerned.
type hub struct {
	log *slog.Logger
	nc  *nats.Conn
	m   *metrics

	mu     sync.RWMutex
	room   map[*client]struct{}            // the lobby: every local client
	users  map[string]*localUser           // user id -> their sockets here
	tokens map[string]map[*client]struct{} // token id -> sockets opened with it
	subs   []*nats.Subscription            // hub-wide: rooms, revocations, presence

	online  map[string]chat.User // who is online, everywhere
	presRev uint64               // presence bucket revision the list is as of
}

// subscribeTimeout bounds the round trip that confirms a user's
// subscriptions with the server.
const subscribeTimeout = 2 * time.Second

type localUser struct {
	clients map[*client]struct{}
	subs    []*nats.Subscription
}

func newHub(log *slog.Logger, nc *nats.Conn, m *metrics) (*hub, error) {
	h := &hub{log: log, nc: nc, m: m, room: map[*client]struct{}{}, users: map[string]*localUser{},
		tokens: map[string]map[*client]struct{}{}, online: map[string]chat.User{}}
	room, err := chat.RoomSubject(chat.Lobby)
	if err != nil {
		return nil, err
	}
	for subj, cb := range map[string]nats.MsgHandler{
		chat.LivePrefix + room:       h.onRoom,
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
	return h, nil
}

func (h *hub) close() {
	for _, s := range h.subs {
		_ = s.Unsubscribe()
	}
}

// join registers c and queues hello then the online list, so every
// presence change after the list follows it; its user's dm subscriptions
// start with their first socket here.
func (h *hub) join(c *client, hello []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	u := h.users[c.user.ID]
	if u == nil {
		u = &localUser{clients: map[*client]struct{}{}}
		id := c.user.ID
		// chat.dm.<lo>.<hi>: the user is lo in "<id>.*" and hi in "*.<id>";
		// a note to self matches both and is delivered from the first.
		for _, sub := range []struct {
			subject string
			cb      nats.MsgHandler
		}{
			{chat.LivePrefix + "chat.dm." + id + ".*", func(m *nats.Msg) { h.onDM(id, m) }},
			{chat.LivePrefix + "chat.dm.*." + id, func(m *nats.Msg) {
				if !strings.HasPrefix(m.Subject, chat.LivePrefix+"chat.dm."+id+".") {
					h.onDM(id, m)
				}
			}},
		} {
			s, err := h.nc.Subscribe(sub.subject, sub.cb)
			if err != nil {
				for _, s := range u.subs {
					_ = s.Unsubscribe()
				}
				return err
			}
			_ = s.SetPendingLimits(-1, -1)
			u.subs = append(u.subs, s)
		}
		// The server has the subscriptions before the client hears hello,
		// so nothing sent to the user after hello can miss them.
		if err := h.nc.FlushTimeout(subscribeTimeout); err != nil {
			for _, s := range u.subs {
				_ = s.Unsubscribe()
			}
			return fmt.Errorf("subscribe %s: %w", id, err)
		}
		h.users[id] = u
	}
	u.clients[c] = struct{}{}
	h.room[c] = struct{}{}
	c.enqueue(hello)
	c.enqueue(h.presenceListFrame())
	if h.tokens[c.claims.ID] == nil {
		h.tokens[c.claims.ID] = map[*client]struct{}{}
	}
	h.tokens[c.claims.ID][c] = struct{}{}
	h.m.sockets.Inc()
	return nil
}

// leave unregisters c; its user's subscriptions end with their last socket.
func (h *hub) leave(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.room[c]; !ok {
		return
	}
	delete(h.room, c)
	if u := h.users[c.user.ID]; u != nil {
		delete(u.clients, c)
		if len(u.clients) == 0 {
			for _, s := range u.subs {
				_ = s.Unsubscribe()
			}
			delete(h.users, c.user.ID)
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
	seq, err := strconv.ParseUint(m.Header.Get(chat.SequenceHeader), 10, 64)
	if err != nil {
		h.log.Error("live message without sequence", "subject", m.Subject)
		return nil, 0, false
	}
	f, err := messageFrame(m.Data, seq)
	if err != nil {
		h.log.Error("undecodable stored message", "subject", m.Subject, "seq", seq, "err", err)
		return nil, 0, false
	}
	return chat.Encode(f), seq, true
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
	defer h.mu.RUnlock()
	for c := range h.room {
		c.deliver(b, seq)
	}
}

func (h *hub) onDM(user string, m *nats.Msg) {
	b, seq, ok := h.frame(m)
	if !ok {
		return
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if u := h.users[user]; u != nil {
		for c := range u.clients {
			c.deliver(b, seq)
		}
	}
}

// onRevoked closes the sockets opened with a revoked token.
func (h *hub) onRevoked(m *nats.Msg) {
	var r chat.Revocation
	if err := json.Unmarshal(m.Data, &r); err != nil || r.TokenID == "" {
		h.log.Warn("undecodable revocation", "err", err)
		return
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.tokens[r.TokenID] {
		c.closeWith(chat.CloseTokenRevoked, "token revoked")
	}
}

// closeAll closes every socket with code (gateway shutdown).
func (h *hub) closeAll(code int, text string) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.room {
		c.closeWith(code, text)
	}
}
