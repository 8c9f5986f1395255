package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/poll"
	"github.com/natter/natter/services/servicetest"
)

// A gateway whose NATS link is cut while others store messages keeps its
// sockets open: once back it reads what it missed from the stream and
// delivers it, each message once, in seq order, before anything newer. A
// user whose rooms changed meanwhile (on another gateway: the event was
// missed) is closed for resume, and learns the room on reconnecting.
func TestNATSCutCaughtUpOnOpenSockets(t *testing.T) {
	e := startChat(t, 1, map[string]string{"SEND_RATE": "1000", "SEND_BURST": "1000", "USER_SENDS_PER_MINUTE": "10000"})
	e.users["dave"], e.users["erin"] = "Dave", "Erin"
	relay := natstest.StartRelay(t, e.ns.URL())
	// A small queue (64 objects): the catch-up must pace what it queues,
	// or the sockets would be closed as too slow.
	cutGW := servicetest.Start(t, "gateway", run, map[string]string{"NATS_URL": relay.URL(), "HTTP_ADDR": "127.0.0.1:0", "SEND_QUEUE": "64"})
	cutGW.WaitReady(t)

	bob, _ := e.dial(t, e.gws[0], "bob")
	dave0, _ := e.dial(t, e.gws[0], "dave")
	live := func(user string) *wsClient {
		c, hello := e.dial(t, cutGW, user)
		c.send(t, fmt.Sprintf(`{"type":"resume","after":%d}`, seq(hello)))
		c.nextOf(t, "resumed")
		return c
	}
	alice, carol, dave := live("alice"), live("carol"), live("dave")
	bob.send(t, `{"type":"room_create","id":"r1","name":"Cut","visibility":"public"}`)
	room := bob.nextOf(t, "room")["room"].(map[string]any)["id"].(string)
	alice.send(t, fmt.Sprintf(`{"type":"join","id":"j1","room":%q}`, room))
	alice.nextOf(t, "joined")
	// A second room no one on the cut gateway is in.
	bob.send(t, `{"type":"room_create","id":"r2","name":"Elsewhere","visibility":"public"}`)
	room2 := bob.nextOf(t, "room")["room"].(map[string]any)["id"].(string)
	// A direct message to erin before she has a socket here, then a
	// fresh one of hers (no resume: she reads history): the catch-up
	// must not give it to her live.
	bob.send(t, `{"type":"send","id":"e0","to":{"user":"erin"},"text":"before"}`)
	bob.nextOf(t, "ack")
	erin, _ := e.dial(t, cutGW, "erin")

	relay.Cut()
	// Dave joins both rooms on his other device while his socket's
	// gateway is away.
	dave0.send(t, fmt.Sprintf(`{"type":"join","id":"j2","room":%q}`, room))
	dave0.nextOf(t, "joined")
	dave0.send(t, fmt.Sprintf(`{"type":"join","id":"j3","room":%q}`, room2))
	dave0.nextOf(t, "joined")
	sent := map[uint64]string{} // seq -> conversation
	send := func(to string) {
		bob.send(t, fmt.Sprintf(`{"type":"send","id":"c%d","to":%s,"text":"message %d"}`, len(sent), to, len(sent)))
		sent[seq(bob.nextOf(t, "ack"))] = to
	}
	lobby, toAlice, toRoom, toRoom2 := `{"room":"lobby"}`, `{"user":"alice"}`, fmt.Sprintf(`{"room":%q}`, room), fmt.Sprintf(`{"room":%q}`, room2)
	const each = 100
	for range each {
		send(lobby)
		send(toAlice)
		send(toRoom)
	}
	for range each / 10 {
		send(toRoom2)
	}
	// Back, and more comes while the gateway catches up: what it reads
	// again comes live too, and must reach the sockets once, in order.
	linked := relay.Linked()
	relay.Restore()
	poll.Until(t, 10*time.Second, func() error {
		if relay.Linked() == linked {
			return errors.New("the gateway has not reconnected through the relay")
		}
		return nil
	})
	// A socket opened now learns the stream's end at its hello, as the
	// gateway's rooms are read again; it gets nothing older live.
	erin2, erin2Hello := e.dial(t, cutGW, "erin")
	for range each / 2 {
		send(lobby)
		send(toAlice)
	}

	want := func(name string, c *wsClient, sees func(to string) bool, n int) {
		t.Helper()
		var last uint64
		for range n {
			m := c.nextOf(t, "message")
			s := seq(m)
			to, ok := sent[s]
			switch {
			case !ok:
				t.Fatalf("%s got seq %d, not one sent since the cut: %v", name, s, m)
			case !sees(to):
				t.Fatalf("%s got a message to %s it may not see", name, to)
			case s <= last:
				t.Fatalf("%s got seq %d after %d: out of order or twice", name, s, last)
			}
			last = s
		}
	}
	onlyLobby := func(to string) bool { return to == lobby }
	want("alice", alice, func(to string) bool { return to != toRoom2 }, 4*each)
	want("carol", carol, onlyLobby, 3*each/2)
	want("erin", erin, onlyLobby, 3*each/2)
	// Dave's socket is closed for resume; resuming from the last seq it
	// got, he has every lobby and room message of the cut, and his hello
	// names the room.
	daveGot, code := drain(t, dave)
	if code != 4011 {
		t.Fatalf("dave's socket, whose rooms changed while the gateway was away, closed with %d, want 4011", code)
	}
	var daveLast uint64
	for s := range daveGot {
		daveLast = max(daveLast, s)
	}
	dave2, hello := e.dial(t, cutGW, "dave")
	if rooms := fmt.Sprint(hello["rooms"]); !strings.Contains(rooms, room) || !strings.Contains(rooms, room2) {
		t.Fatalf("dave's hello after the resume lists rooms %v, want %s and %s among them", hello["rooms"], room, room2)
	}
	dave2.send(t, fmt.Sprintf(`{"type":"resume","after":%d}`, daveLast))
	for {
		f := dave2.next(t)
		if f["type"] == "resumed" {
			break
		}
		if f["type"] == "message" {
			daveGot[seq(f)] = true
		}
	}
	for s, to := range sent {
		if (to == lobby || to == toRoom || to == toRoom2) && !daveGot[s] {
			t.Errorf("dave never got seq %d (to %s), on his first socket or by resuming after %d", s, to, daveLast)
		}
	}

	// Live delivery goes on, on the same sockets, with nothing twice.
	bob.send(t, `{"type":"send","id":"after","to":{"room":"lobby"},"text":"after"}`)
	after := seq(bob.nextOf(t, "ack"))
	for name, c := range map[string]*wsClient{"alice": alice, "carol": carol, "erin": erin} {
		if m := c.nextOf(t, "message"); seq(m) != after {
			t.Fatalf("%s's next message after the catch-up is %v, want seq %d", name, m, after)
		}
	}
	for {
		m := erin2.nextOf(t, "message")
		if seq(m) <= seq(erin2Hello) {
			t.Fatalf("erin's socket opened at seq %d got seq %d live", seq(erin2Hello), seq(m))
		}
		if seq(m) == after {
			break
		}
	}
	metrics := get(t, cutGW.URL+"/metrics")
	for _, line := range []string{"gateway_catchups_total 1", "gateway_resume_closes_total 1"} {
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("metrics lack %q", line)
		}
	}
}

// drain reads a socket to its close, and returns the seqs of the
// messages it got and the close code.
func drain(t *testing.T, c *wsClient) (map[uint64]bool, int) {
	t.Helper()
	got := map[uint64]bool{}
	for _, f := range c.held {
		if f["type"] == "message" {
			got[seq(f)] = true
		}
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case f, ok := <-c.in:
			if ok {
				if f["type"] == "message" {
					got[seq(f)] = true
				}
				continue
			}
			var ce *websocket.CloseError
			if err := <-c.err; !errors.As(err, &ce) {
				t.Fatalf("socket ended without a close frame: %v", err)
			}
			return got, ce.Code
		case <-deadline:
			t.Fatal("socket not closed within 10s")
		}
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
