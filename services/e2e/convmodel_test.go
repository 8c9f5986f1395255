package e2e_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/natter/natter/services/poll"
)

// convModel is a socket's conversation list kept up to date by applying
// the frames the socket receives to its first list, as a client does:
// Zulip's check that applying events gives the state a fresh client gets.
type convModel struct {
	me     string
	items  map[string]convState // by convKey
	others map[string][]float64 // by convKey: seqs of others' messages received
}

// convState is what the model follows of one conversation.
type convState struct {
	Last, Read, Unread float64
}

// convKey names a conversation: "room:<id>" or "user:<other id>".
func convKey(to map[string]any) string {
	if r, ok := to["room"].(string); ok {
		return "room:" + r
	}
	return "user:" + fmt.Sprint(to["user"])
}

// newConvModel starts from a conversations frame.
func newConvModel(me string, list map[string]any) *convModel {
	m := &convModel{me: me, items: conversationStates(list), others: map[string][]float64{}}
	return m
}

// conversationStates is a conversations frame's items, by convKey.
func conversationStates(list map[string]any) map[string]convState {
	items := map[string]convState{}
	for _, it := range list["items"].([]any) {
		it := it.(map[string]any)
		st := convState{Read: it["read"].(float64), Unread: it["unread"].(float64)}
		if last, ok := it["last"].(map[string]any); ok {
			st.Last = last["seq"].(float64)
		}
		items[convKey(it["to"].(map[string]any))] = st
	}
	return items
}

// apply changes the model as one received frame says.
func (m *convModel) apply(o map[string]any) {
	switch o["type"] {
	case "message":
		to := o["to"].(map[string]any)
		from := o["from"].(map[string]any)["id"]
		k := convKey(to)
		if to["user"] != nil && from != m.me {
			k = "user:" + fmt.Sprint(from)
		}
		st, seq := m.items[k], o["seq"].(float64)
		st.Last = max(st.Last, seq)
		switch {
		case from == m.me: // sending is reading
			st.Read, st.Unread = max(st.Read, seq), 0
		case seq > st.Read:
			st.Unread++
		}
		if from != m.me {
			m.others[k] = append(m.others[k], seq)
		}
		m.items[k] = st
	case "read":
		// The count is as of when the server made it: messages from
		// others after the cursor that arrived since are unread too.
		k := convKey(o["to"].(map[string]any))
		st, seq := m.items[k], o["seq"].(float64)
		st.Read, st.Unread = seq, max(o["unread"].(float64), m.othersAfter(k, seq))
		m.items[k] = st
	case "joined":
		k := "room:" + o["room"].(map[string]any)["id"].(string)
		conv, ok := o["conversation"].(map[string]any)
		if !ok {
			panic(fmt.Sprintf("joined frame without its conversation: %v", o))
		}
		m.items[k] = conversationStates(map[string]any{"items": []any{conv}})[k]
	case "left":
		delete(m.items, "room:"+o["room"].(map[string]any)["id"].(string))
	}
}

// othersAfter counts the messages from others received in conversation
// k after seq.
func (m *convModel) othersAfter(k string, seq float64) float64 {
	n := 0.0
	for _, s := range m.others[k] {
		if s > seq {
			n++
		}
	}
	return n
}

// follow applies what s receives until stop matches (applied too).
func (m *convModel) follow(t *testing.T, s *chatSocket, what string, stop func(map[string]any) bool) {
	t.Helper()
	s.waitFor(t, what, func(o map[string]any) bool {
		m.apply(o)
		return stop(o)
	})
}

// diff says how a fresh list differs from the model ("" if it does not).
func (m *convModel) diff(fresh map[string]convState) string {
	var d []string
	for _, k := range slices.Sorted(maps.Keys(m.items)) {
		if f, ok := fresh[k]; !ok {
			d = append(d, k+": only in the applied model")
		} else if f != m.items[k] {
			d = append(d, fmt.Sprintf("%s: applied %+v, fresh %+v", k, m.items[k], f))
		}
	}
	for k := range fresh {
		if _, ok := m.items[k]; !ok {
			d = append(d, k+": only in the fresh list")
		}
	}
	return strings.Join(d, "; ")
}

// membership matches a joined or left frame of room.
func membership(typ, room string) func(map[string]any) bool {
	return func(o map[string]any) bool {
		r, ok := o["room"].(map[string]any)
		return o["type"] == typ && ok && r["id"] == room
	}
}

// freshList is the conversations a new socket of cookie's user gets.
func freshList(t *testing.T, gateway, cookie string) map[string]convState {
	t.Helper()
	s, _ := dialChat(t, gateway, cookie, 0)
	defer s.close()
	return conversationStates(s.expect(t, "conversations", typed("conversations")))
}

// TestConversationsApplyEqualsFresh: across two gateways and three users,
// after sends, reads, joins, leaves and invites, the conversation list a
// socket keeps by applying what it received equals the list a fresh
// socket gets, on either gateway, and again after a gateway restart.
func TestConversationsApplyEqualsFresh(t *testing.T) {
	s := startBrowserStack(t, roomsEnv...)
	aliceID, aliceCookie := registerLogin(t, s.gateways[0], "alice", "Alice", "apply-words-2026")
	bobID, bobCookie := registerLogin(t, s.gateways[1], "bob", "Bob", "apply-words-2026")
	carolID, carolCookie := registerLogin(t, s.gateways[0], "carol", "Carol", "apply-words-2026")
	watcher, _ := dialChat(t, s.gateways[0], aliceCookie, 0) // alice's socket the model follows
	model := newConvModel(aliceID, watcher.expect(t, "first conversations", typed("conversations")))
	alice, _ := dialChat(t, s.gateways[1], aliceCookie, 0) // alice's other device, acting
	bob, _ := dialChat(t, s.gateways[1], bobCookie, 0)
	carol, _ := dialChat(t, s.gateways[0], carolCookie, 0)

	bob.say(t, "b1", toUser(aliceID), "hi alice")
	room := alice.createRoom(t, "c1", "Apply fans", "public")
	// A socket told it joined a room gets every later message of it live.
	model.follow(t, watcher, "joined", membership("joined", room))
	bob.send(t, fmt.Sprintf(`{"type":"join","room":%q}`, room))
	bob.expect(t, "joined", typed("joined"))
	bob.say(t, "b2", toRoom(room), "first in the room")
	bob.say(t, "b3", toRoom(room), "second in the room")
	carol.say(t, "k1", `{"room":"lobby"}`, "lobby news")
	model.follow(t, watcher, "b3", func(o map[string]any) bool { return o["id"] == "b3" })
	dmSeq := model.items["user:"+bobID].Last
	alice.send(t, fmt.Sprintf(`{"type":"read","to":%s,"seq":%d}`, toUser(bobID), uint64(dmSeq)))

	secret := carol.createRoom(t, "c2", "Carol's den", "private")
	carol.send(t, fmt.Sprintf(`{"type":"invite","id":"i1","room":%q,"user":%q}`, secret, aliceID))
	alice.expect(t, "invited", typed("invited"))
	alice.send(t, fmt.Sprintf(`{"type":"join","room":%q}`, secret))
	alice.expect(t, "joined", typed("joined"))
	model.follow(t, watcher, "joined", membership("joined", secret))
	carol.say(t, "k2", toRoom(secret), "welcome")
	watcherSays := fmt.Sprintf(`{"type":"send","id":"a1","to":%s,"text":"from the watcher"}`, toRoom(room))
	watcher.send(t, watcherSays)
	alice.send(t, fmt.Sprintf(`{"type":"leave","room":%q}`, room))
	alice.expect(t, "left", typed("left"))
	alice.send(t, fmt.Sprintf(`{"type":"join","room":%q}`, room))
	alice.expect(t, "joined again", typed("joined"))
	model.follow(t, watcher, "joined again", membership("joined", room))
	bob.say(t, "b4", toRoom(room), "welcome back")
	carol.say(t, "k3", toUser(aliceID), "the end")
	model.follow(t, watcher, "the last message", func(o map[string]any) bool { return o["id"] == "k3" })
	if len(model.items) != 5 { // lobby, bob, carol, room, secret
		t.Fatalf("applied model has %d conversations, want 5: %v", len(model.items), model.items)
	}
	if st := model.items["user:"+carolID]; st.Unread != 1 {
		t.Fatalf("carol's new conversation: %+v, want 1 unread", st)
	}

	same := func(gateway string) func() error {
		return func() error {
			if d := model.diff(freshList(t, gateway, aliceCookie)); d != "" {
				return fmt.Errorf("fresh list on %s differs: %s", gateway, d)
			}
			return nil
		}
	}
	// Sending is reading: the watcher's cursor moves in the background
	// (at most once a second), so the lists agree once it has.
	for _, gw := range s.gateways {
		poll.Until(t, 15*time.Second, same(gw))
	}
	// bob's fresh list shows how far alice read him.
	poll.Until(t, 15*time.Second, func() error {
		b, _ := dialChat(t, s.gateways[0], bobCookie, 0)
		defer b.close()
		for _, it := range b.expect(t, "bob's conversations", typed("conversations"))["items"].([]any) {
			it := it.(map[string]any)
			if convKey(it["to"].(map[string]any)) == "user:"+aliceID && it["seen"] == dmSeq {
				return nil
			}
		}
		return fmt.Errorf("bob's conversation with alice does not show seen %v", dmSeq)
	})
	s.gw[1].stop(t)
	s.startGateway(t, 1)
	poll.Until(t, 15*time.Second, same(s.gateways[1]))
}
