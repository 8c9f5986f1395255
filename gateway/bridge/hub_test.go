package bridge

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/token"
)

// Every user subscription delivers to one queue; the subscription a
// message came through says whose it is, and a note to self (both
// subscriptions match) is delivered once.
func TestDMRecipient(t *testing.T) {
	for _, tc := range []struct {
		sub, subject string
		user         string
		ok           bool
	}{
		{dmPrefix + "ann.*", dmPrefix + "ann.bob", "ann", true},
		{dmPrefix + "*.bob", dmPrefix + "ann.bob", "bob", true},
		{dmPrefix + "ann.*", dmPrefix + "ann.ann", "ann", true},
		{dmPrefix + "*.ann", dmPrefix + "ann.ann", "", false},
		{dmPrefix + "*.an", dmPrefix + "ann.an", "an", true},
	} {
		user, ok := dmRecipient(&nats.Msg{Subject: tc.subject, Sub: &nats.Subscription{Subject: tc.sub}})
		if ok != tc.ok || (ok && user != tc.user) {
			t.Errorf("%s via %s: %q %v, want %q %v", tc.subject, tc.sub, user, ok, tc.user, tc.ok)
		}
	}
	if _, ok := dmRecipient(&nats.Msg{Subject: dmPrefix + "a.b"}); ok {
		t.Error("a message without its subscription has a recipient")
	}
}

// Direct messages dropped because the queue was full close their user's
// sockets for resume, and only theirs; room messages dropped close every
// socket.
func TestSlowConsumerClosesForResume(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry())
	h := &hub{log: slog.New(slog.NewTextHandler(io.Discard, nil)), m: m, users: map[string]*localUser{}, local: map[*client]struct{}{}}
	gw := &Gateway{metrics: m, limits: Limits{QueueLen: 64, QueueBytes: 1 << 20}}
	socket := func(user string) *client {
		c := &client{gw: gw, conn: newRecorder(), claims: &token.Claims{}}
		if h.users[user] == nil {
			h.users[user] = &localUser{clients: map[*client]struct{}{}}
		}
		h.users[user].clients[c] = struct{}{}
		h.local[c] = struct{}{}
		return c
	}
	bob1, bob2, ann := socket("bob"), socket("bob"), socket("ann")
	h.onSlowConsumer(&nats.Subscription{Subject: dmPrefix + "*.bob"})
	for _, c := range []*client{bob1, bob2} {
		if !c.conn.IsClosing() || c.conn.CloseCode() != chat.CloseResume || !c.frozen.Load() {
			t.Fatalf("bob's socket: closed %v, frozen %v; want closed %d and frozen", c.conn.IsClosing(), c.frozen.Load(), chat.CloseResume)
		}
	}
	if h.users["bob"] != nil {
		t.Fatal("bob's subscriptions were kept: his next socket would reuse them")
	}
	// His new socket's entry outlives the old sockets leaving.
	bob3 := socket("bob")
	h.leave(bob1)
	h.leave(bob2)
	u := h.users["bob"]
	if u == nil {
		t.Fatal("an old socket leaving dropped the new socket's entry")
	}
	if _, ok := u.clients[bob3]; !ok || len(u.clients) != 1 {
		t.Fatalf("bob's entry holds %d sockets, want only the new one", len(u.clients))
	}
	if ann.conn.IsClosing() {
		t.Fatal("another user's socket was closed")
	}
	// Another subscription of the same subject is not the room's.
	h.roomSub = &nats.Subscription{Subject: chat.LivePrefix + "chat.room.lobby"}
	h.onSlowConsumer(&nats.Subscription{Subject: h.roomSub.Subject})
	if ann.conn.IsClosing() {
		t.Fatal("a slow subscription that is not the room's closed a user's sockets")
	}
	// Room messages dropped (the room shares the live channel, see hub)
	// concern every socket here: all are closed for resume.
	h.onSlowConsumer(h.roomSub)
	for name, c := range map[string]*client{"ann": ann, "bob3": bob3} {
		if !c.conn.IsClosing() || c.conn.CloseCode() != chat.CloseResume || !c.frozen.Load() {
			t.Fatalf("%s's socket after room messages were dropped: closed %v, frozen %v; want closed %d and frozen", name, c.conn.IsClosing(), c.frozen.Load(), chat.CloseResume)
		}
	}
}

func TestPresenceDelay(t *testing.T) {
	for _, tc := range []struct {
		sockets int
		want    time.Duration
	}{
		{0, presenceBatch},
		{250, presenceBatch},
		{2000, 400 * time.Millisecond},
		{5000, time.Second},
		{100000, presenceBatchMax},
	} {
		if got := presenceDelay(tc.sockets); got != tc.want {
			t.Errorf("presenceDelay(%d) = %v, want %v", tc.sockets, got, tc.want)
		}
	}
}
