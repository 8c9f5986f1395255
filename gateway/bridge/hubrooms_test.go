package bridge

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/poll"
	"github.com/natter/natter/services/token"
)

// newTestHub is a hub on an embedded NATS server, with its connection
// and a gateway for its sockets (queues of 64 frames, 1 MiB).
func newTestHub(t *testing.T) (*hub, *nats.Conn, *Gateway) {
	t.Helper()
	ns := natstest.Start(t)
	nc := natstest.Connect(t, ns.URL())
	m := newMetrics(prometheus.NewRegistry())
	lim := Limits{QueueLen: 64, QueueBytes: 1 << 20}
	h, err := newHub(slog.New(slog.NewTextHandler(io.Discard, nil)), nc, m, lim, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.close)
	return h, nc, &Gateway{metrics: m, limits: lim}
}

// A gateway is subscribed to a room while one of its members has a
// socket here: messages and events of the room reach its members' sockets
// only (events not their actor's), and the subscriptions end with the
// last member leaving the room or closing their last socket.
func TestRoomSubscriptionsFollowMembers(t *testing.T) {
	h, nc, gw := newTestHub(t)
	socket := func(user string) (*client, *recorder) {
		r := newRecorder()
		c := &client{gw: gw, conn: r, claims: &token.Claims{}, user: chat.User{ID: user}, state: stateLive}
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.users[user] == nil {
			h.users[user] = &localUser{clients: map[*client]struct{}{}, rooms: map[string]struct{}{}}
		}
		h.users[user].clients[c] = struct{}{}
		h.local[c] = struct{}{}
		return c, r
	}
	_, ann := socket("ann")
	_, bob := socket("bob")
	catSocket, cat := socket("cat")
	base := nc.NumSubscriptions()
	extra := func() int { return nc.NumSubscriptions() - base }

	h.entered("ann", "r1")
	h.entered("bob", "r1")
	h.entered("cat", "r2")
	if extra() != 4 {
		t.Fatalf("%d room subscriptions for two rooms, want 4 (messages and events of each)", extra())
	}

	stored := nats.NewMsg(roomLivePrefix + "r1")
	stored.Header.Set(chat.SequenceHeader, "7")
	stored.Data = chat.Encode(chat.Message{ID: "m1", From: chat.User{ID: "ann"}, To: chat.To{Room: "r1"}, Text: "hi", TS: time.Now()})
	typing := nats.NewMsg(chat.RoomEventsPrefix + "r1")
	typing.Header.Set(chat.ActorHeader, "ann")
	typing.Data = chat.Encode(chat.TypingFrame{Type: chat.FrameTyping, To: chat.To{Room: "r1"}, User: chat.User{ID: "ann"}})
	for _, msg := range []*nats.Msg{stored, typing} {
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	got := func(r *recorder, what string) bool {
		for _, f := range r.sentFrames() {
			if bytes.Contains(f, []byte(what)) {
				return true
			}
		}
		return false
	}
	poll.Until(t, 5*time.Second, func() error {
		if !got(ann, `"id":"m1"`) || !got(bob, `"id":"m1"`) || !got(bob, `"type":"typing"`) {
			return fmt.Errorf("the room's members have not had the message and the typing yet")
		}
		return nil
	})
	if got(ann, `"type":"typing"`) || got(cat, `"id":"m1"`) || got(cat, `"type":"typing"`) {
		t.Fatalf("delivered beyond the room's other members: ann %q, cat %q", ann.sentFrames(), cat.sentFrames())
	}

	h.left("ann", "r1")
	if extra() != 4 {
		t.Fatalf("%d room subscriptions after one of two members left, want 4", extra())
	}
	h.left("bob", "r1")
	h.leave(catSocket) // cat's last socket: r2 goes with it
	h.mu.RLock()
	rooms, subs := len(h.rooms), len(h.subRooms)
	h.mu.RUnlock()
	if extra() != 0 || rooms != 0 || subs != 0 {
		t.Fatalf("after the last members went: %d subscriptions, %d rooms, %d subscription entries; want none", extra(), rooms, subs)
	}
}
