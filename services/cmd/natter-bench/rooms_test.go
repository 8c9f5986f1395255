package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Rooms are sized evenly from the smallest to the biggest, their members
// distinct, split evenly over two gateways, and created by different
// users.
func TestPlanRooms(t *testing.T) {
	p := planRooms(100, 1000, 10, 100)
	creators := map[int]bool{}
	for k, ms := range p.members {
		if want := 10 + 90*k/99; len(ms) != want {
			t.Fatalf("room %d has %d members, want %d", k, len(ms), want)
		}
		seen, even := map[int]bool{}, 0
		for _, u := range ms {
			if seen[u] || !p.member[u*p.rooms+k] {
				t.Fatalf("room %d: member %d twice or not marked", k, u)
			}
			seen[u] = true
			even += 1 - u%2
		}
		if odd := len(ms) - even; even-odd > 1 || odd-even > 1 {
			t.Fatalf("room %d: %d members on one gateway, %d on the other", k, even, odd)
		}
		creators[ms[0]] = true
	}
	if len(p.members[0]) != 10 || len(p.members[99]) != 100 || len(creators) != 100 {
		t.Fatalf("sizes %d..%d, %d creators", len(p.members[0]), len(p.members[99]), len(creators))
	}
}

// The tally counts a delivery to a non-member as wrong room, and per
// member what is missing or came twice; another run's messages not at all.
func TestRoomTally(t *testing.T) {
	p := planRooms(2, 10, 2, 3) // room 0: users 0, 1; room 1: users 7, 8, 9
	tl := newRoomTally(p, "rX-")
	for n := range 2 {
		tl.frame(0, rframe{Type: "ack", ID: roomMsgID("rX-", 0, n)})
	}
	tl.frame(7, rframe{Type: "ack", ID: roomMsgID("rX-", 1, 0)})
	tl.frame(7, rframe{Type: "error", ID: roomMsgID("rX-", 1, 1), Code: "rate_limited"})
	at := time.Now()
	deliver := func(u, k, n int) { tl.message(u, roomMsgID("rX-", k, n), stamp(at), at) }
	deliver(0, 0, 0)
	deliver(0, 0, 1)
	deliver(1, 0, 0) // user 1 misses message 1 of room 0
	deliver(7, 1, 0)
	deliver(8, 1, 0)
	deliver(8, 1, 0) // twice
	deliver(9, 1, 0)
	deliver(2, 0, 0) // not a member
	deliver(9, 0, 1) // not a member
	tl.message(0, roomMsgID("rY-", 0, 5), stamp(at), at)
	missing, dups := tl.check()
	if missing != 1 || dups != 1 || tl.wrongRoom.Load() != 2 || tl.deliveriesDue.Load() != 2*2+3 || tl.refused.total() != 1 {
		t.Fatalf("missing %d, duplicates %d, wrong room %d, due %d, refused %d", missing, dups, tl.wrongRoom.Load(), tl.deliveriesDue.Load(), tl.refused.total())
	}
	if k, ok := parseRoomMsgID("rX-", roomMsgID("rX-", 42, 7)); !ok || k != 42 {
		t.Fatalf("parsed %d %v", k, ok)
	}
}

// A peer's requests get their answers: by id, a join by its joined frame
// (which has none), a listing page by page.
func TestPeerAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(fakeRoomsGateway))
	defer srv.Close()
	var c common
	c.gateways, c.sources = srv.URL, 1
	peers, err := openPeers(t.Context(), c.newDialer(), []session{{ID: "u1", Account: "a1"}}, 1, "rT-", peerHooks{})
	if err != nil {
		t.Fatal(err)
	}
	defer closePeers(peers)
	p := peers[0]
	if len(p.rooms) != 1 || p.rooms[0] != "r-old" {
		t.Fatalf("hello rooms %q", p.rooms)
	}
	if err := waitSignal(p.listed, "conversations", 0); err != nil {
		t.Fatal(err)
	}
	id, err := p.createRoom("x")
	if err != nil || id != "r-new" {
		t.Fatalf("createRoom: %q %v", id, err)
	}
	if err := p.join("r-new"); err != nil {
		t.Fatal(err)
	}
	if err := p.post(`{"room":"r-new"}`, "hi"); err != nil {
		t.Fatal(err)
	}
	if n, err := p.countConversations(); err != nil || n != 150 {
		t.Fatalf("counted %d conversations, %v", n, err)
	}
}

// fakeRoomsGateway answers the few frames the peers send: hello and a
// conversations frame first, then room, joined (without the id), ack and
// pages of 100 of 150 conversations; the first request of each kind is
// refused as rate_limited, to be asked again.
func fakeRoomsGateway(w http.ResponseWriter, r *http.Request) {
	conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"hello","rooms":["lobby","r-old"],"seq":1}`+"\n"+`{"type":"presence","users":[]}`+"\n"+`{"type":"conversations","items":[],"more":false}`))
	limited := map[string]bool{}
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			return
		}
		var f struct {
			Type, ID, Room string
			Before         uint64
		}
		_ = json.Unmarshal(b, &f)
		if !limited[f.Type] {
			limited[f.Type] = true
			_ = conn.WriteJSON(map[string]string{"type": "error", "id": f.ID, "code": "rate_limited"})
			continue
		}
		var out string
		switch f.Type {
		case "room_create":
			out = fmt.Sprintf(`{"type":"room","id":%q,"room":{"id":"r-new","name":"x"}}`, f.ID)
		case "join":
			out = fmt.Sprintf(`{"type":"member","room":%q}`+"\n"+`{"type":"joined","room":{"id":%q}}`, f.Room, f.Room)
		case "send":
			out = fmt.Sprintf(`{"type":"ack","id":%q,"seq":9}`, f.ID)
		case "conversations":
			out = fakeConversations(f.ID, f.Before)
		}
		_ = conn.WriteMessage(websocket.TextMessage, []byte(out))
	}
}

// fakeConversations is a page of 150 conversations with last seqs 150..1.
func fakeConversations(id string, before uint64) string {
	if before == 0 {
		before = 151
	}
	var items []map[string]any
	for s := before - 1; s >= 1 && len(items) < 100; s-- {
		items = append(items, map[string]any{"to": map[string]string{"user": "x"}, "last": map[string]uint64{"seq": s}})
	}
	b, _ := json.Marshal(map[string]any{"type": "conversations", "id": id, "items": items, "more": before-1 > uint64(len(items))})
	return string(b)
}

// A storm's handshake ends at the conversations frame, after hello, and
// reads no further.
func TestStormOne(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(fakeRoomsGateway))
	defer srv.Close()
	var c common
	c.gateways, c.sources = srv.URL, 1
	s, conn, err := stormOne(t.Context(), c.newDialer(), session{ID: "u1"}, 0)
	if conn != nil {
		defer conn.Close()
	}
	if err != nil || s.failed != "" || s.hello.IsZero() || s.listed.Before(s.hello) {
		t.Fatalf("storm socket %+v, %v", s, err)
	}
}
