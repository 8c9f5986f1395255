package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/poll"
)

// item is one conversation of a conversations frame, as the test reads it.
type item struct {
	to, title, last string
	seq             uint64
	read, unread    uint64
}

// nextRead is c's read frame at seq, past those of earlier moves (each
// send moves its sender's cursor too).
func nextRead(t *testing.T, c *wsClient, at uint64) map[string]any {
	t.Helper()
	for {
		if r := c.nextOf(t, "read"); seq(r) == at {
			return r
		}
	}
}

func conversations(t *testing.T, f map[string]any) ([]item, bool) {
	t.Helper()
	var out []item
	for _, raw := range f["items"].([]any) {
		m := raw.(map[string]any)
		to := m["to"].(map[string]any)
		it := item{title: fmt.Sprint(m["title"]), read: uint64(m["read"].(float64)), unread: uint64(m["unread"].(float64))}
		if r, ok := to["room"]; ok {
			it.to = "room:" + r.(string)
		} else {
			it.to = "user:" + to["user"].(string)
		}
		if l, ok := m["last"].(map[string]any); ok {
			it.last, it.seq = l["text"].(string), uint64(l["seq"].(float64))
		}
		out = append(out, it)
	}
	return out, f["more"].(bool)
}

// After a reload, or on another device, a user's private conversations
// are all there, most recent first, with their latest message and what
// is unread: the server keeps them, not the page.
func TestConversationsSurviveReconnect(t *testing.T) {
	e := startChat(t, 2, nil)
	alice, _ := e.dial(t, e.gws[0], "alice")
	bob, _ := e.dial(t, e.gws[1], "bob")
	carol, _ := e.dial(t, e.gws[1], "carol")
	for _, c := range []*wsClient{alice, bob, carol} {
		c.nextConversations(t) // each socket's first listing
	}
	sendOK(t, alice, "l1", `{"room":"lobby"}`, "hi all")
	sendOK(t, alice, "b1", `{"user":"bob"}`, "hi bob")
	sendOK(t, alice, "c1", `{"user":"carol"}`, "hi carol")
	re := sendOK(t, bob, "r1", `{"user":"alice"}`, "hi alice")
	sendOK(t, bob, "r2", `{"user":"alice"}`, "are you there?")

	// Alice on another device, on the other gateway.
	alice2, _ := e.dial(t, e.gws[1], "alice")
	items, more := conversations(t, alice2.nextConversations(t))
	if more || len(items) != 3 {
		t.Fatalf("alice's conversations: %+v (more %v), want 3", items, more)
	}
	want := []struct{ to, title, last string }{
		{"user:bob", "Bob", "are you there?"},
		{"user:carol", "Carol", "hi carol"},
		{"room:lobby", "Lobby", "hi all"},
	}
	for i, w := range want {
		if it := items[i]; it.to != w.to || it.title != w.title || it.last != w.last {
			t.Errorf("item %d = %+v, want %+v", i, it, w)
		}
	}
	// Sending is reading: her own message is read (her cursor moves to it
	// in the background), bob's two replies are not.
	poll.Until(t, 10*time.Second, func() error {
		again, _ := e.dial(t, e.gws[1], "alice")
		items, _ := conversations(t, again.nextConversations(t))
		_ = again.conn.Close()
		if it := items[0]; it.to != "user:bob" || it.unread != 2 || it.read == 0 {
			return fmt.Errorf("bob's conversation: %+v, want her own message read and 2 unread", it)
		}
		return nil
	})

	// Alice reads up to bob's first reply: her other socket is told, with
	// one left; bob is told she has seen it.
	alice2.send(t, fmt.Sprintf(`{"type":"read","to":{"user":"bob"},"seq":%d}`, re))
	for name, c := range map[string]*wsClient{"alice": alice, "alice2": alice2} {
		r := nextRead(t, c, re)
		if r["to"].(map[string]any)["user"] != "bob" || r["unread"].(float64) != 1 {
			t.Fatalf("%s got %v, want read of bob's conversation at %d with 1 unread", name, r, re)
		}
	}
	// (Seen frames at her own messages may come first: sending is
	// reading, and bob is told of that too.)
	s := bob.nextOf(t, "seen")
	for seq(s) < re && s["to"].(map[string]any)["user"] == "alice" {
		s = bob.nextOf(t, "seen")
	}
	if s["to"].(map[string]any)["user"] != "alice" || seq(s) != re {
		t.Fatalf("bob got %v, want seen by alice at %d", s, re)
	}

	// A cursor never moves back, and a new listing has it.
	alice2.send(t, `{"type":"read","to":{"user":"bob"},"seq":1}`)
	alice3, _ := e.dial(t, e.gws[0], "alice")
	items, _ = conversations(t, alice3.nextConversations(t))
	if items[0].read != re || items[0].unread != 1 {
		t.Fatalf("after the read: %+v, want read %d and 1 unread", items[0], re)
	}
}

func TestReadRefusals(t *testing.T) {
	e := startChat(t, 1, nil)
	alice, _ := e.dial(t, e.gws[0], "alice")
	for _, tt := range []struct{ frame, code string }{
		{`{"type":"read","id":"r1","to":{"user":"bob"}}`, chat.CodeMissingField},
		{`{"type":"read","id":"r2","to":{"user":"bob"},"seq":999999}`, chat.CodeBadSeq},
		{`{"type":"read","id":"r3","to":{"room":"nowhere"},"seq":1}`, chat.CodeUnknownRoom},
		{`{"type":"read","id":"r4","seq":1}`, chat.CodeMissingField},
	} {
		alice.send(t, tt.frame)
		if f := alice.nextOf(t, "error"); f["code"] != tt.code {
			t.Errorf("%s: %v, want %s", tt.frame, f, tt.code)
		}
	}
}

// More than a page of conversations: the first page holds the most
// recent, the next follows from the last item's seq.
func TestConversationsPaged(t *testing.T) {
	e := startChat(t, 1, map[string]string{"SEND_RATE": "1000", "SEND_BURST": "1000", "HISTORY_COST": "1"})
	for i := range 105 {
		e.users[fmt.Sprintf("u%03d", i)] = fmt.Sprintf("User %d", i)
	}
	alice, _ := e.dial(t, e.gws[0], "alice")
	alice.nextConversations(t)
	for i := range 105 {
		sendOK(t, alice, fmt.Sprintf("m%d", i), fmt.Sprintf(`{"user":"u%03d"}`, i), "hello")
	}
	again, _ := e.dial(t, e.gws[0], "alice")
	first, more := conversations(t, again.nextConversations(t))
	if len(first) != 100 || !more || first[0].to != "user:u104" {
		t.Fatalf("first page: %d items, more %v, first %+v", len(first), more, first[0])
	}
	again.send(t, fmt.Sprintf(`{"type":"conversations","id":"p2","before":%d}`, first[99].seq))
	f := again.nextConversations(t)
	rest, more := conversations(t, f)
	if f["id"] != "p2" || more || len(rest) != 6 || rest[len(rest)-1].to != "room:lobby" {
		t.Fatalf("second page: %+v, more %v", rest, more)
	}
}

// Typing in a direct conversation reaches the other person, on any
// gateway, at most once per socket every TypingInterval; it is never
// stored, and typing in the lobby is not relayed.
func TestTyping(t *testing.T) {
	e := startChat(t, 2, nil)
	alice, _ := e.dial(t, e.gws[0], "alice")
	bob, _ := e.dial(t, e.gws[1], "bob")
	// Typing to someone she never wrote to reaches no one; to bob, once
	// she has, it does.
	carol, _ := e.dial(t, e.gws[1], "carol")
	alice.send(t, `{"type":"typing","to":{"user":"carol"}}`)
	sendOK(t, alice, "d0", `{"user":"bob"}`, "hi")
	alice.send(t, `{"type":"typing","to":{"user":"bob"}}`)
	f := bob.nextOf(t, "typing")
	if f["to"].(map[string]any)["user"] != "alice" || f["user"].(map[string]any)["name"] != "Alice" {
		t.Fatalf("bob got %v, want alice typing to him", f)
	}
	// A second one at once, and one in the lobby: neither is relayed, so
	// what bob gets next is the message sent after them.
	alice.send(t, `{"type":"typing","to":{"user":"bob"}}`)
	alice.send(t, `{"type":"typing","to":{"room":"lobby"}}`)
	sendOK(t, alice, "d1", `{"user":"bob"}`, "there")
	for {
		f := bob.next(t)
		if f["type"] == "typing" {
			t.Fatalf("relayed again within %v: %v", chat.TypingInterval, f)
		}
		if f["type"] == "message" && f["id"] == "d1" {
			break
		}
	}
	// Nothing of it was stored: the conversation holds the messages alone.
	again, _ := e.dial(t, e.gws[0], "bob")
	items, _ := conversations(t, again.nextConversations(t))
	if items[0].to != "user:alice" || items[0].unread != 2 {
		t.Fatalf("bob's conversation with alice: %+v, want the two messages", items[0])
	}
	// Carol, whom alice never wrote to, got no typing: her next frame is
	// the lobby message sent now.
	sendOK(t, alice, "l1", `{"room":"lobby"}`, "all")
	for {
		f := carol.next(t)
		if f["type"] == "typing" {
			t.Fatalf("carol got %v", f)
		}
		if f["type"] == "message" && f["id"] == "l1" {
			break
		}
	}
}
