package e2e_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// roomsEnv lets the room tests make their requests back to back: each
// costs HISTORY_COST of the send rate.
var roomsEnv = []string{"SEND_RATE=200", "SEND_BURST=400"}

// expect reads objects until one matches and returns it.
func (s *chatSocket) expect(t *testing.T, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	var got map[string]any
	s.waitFor(t, what, func(o map[string]any) bool {
		if match(o) {
			got = o
			return true
		}
		return false
	})
	return got
}

// errorFor matches the error frame answering request id.
func errorFor(id string) func(map[string]any) bool {
	return func(o map[string]any) bool { return o["type"] == "error" && o["id"] == id }
}

// wantError sends frame and checks it is refused with code.
func (s *chatSocket) wantError(t *testing.T, frame, id, code string) {
	t.Helper()
	s.send(t, frame)
	if e := s.expect(t, "error "+code+" for "+id, errorFor(id)); e["code"] != code {
		t.Fatalf("%s: error %v (%v), want %s", frame, e["code"], e["message"], code)
	}
}

func typed(typ string) func(map[string]any) bool {
	return func(o map[string]any) bool { return o["type"] == typ }
}

// createRoom creates a room from s and returns its id.
func (s *chatSocket) createRoom(t *testing.T, id, name, visibility string) string {
	t.Helper()
	s.send(t, fmt.Sprintf(`{"type":"room_create","id":%q,"name":%q,"visibility":%q}`, id, name, visibility))
	f := s.expect(t, "room "+name, func(o map[string]any) bool { return (o["type"] == "room" || o["type"] == "error") && o["id"] == id })
	if f["type"] != "room" {
		t.Fatalf("room_create %s: %v", name, f)
	}
	return f["room"].(map[string]any)["id"].(string)
}

func toRoom(id string) string { return fmt.Sprintf(`{"room":%q}`, id) }

// TestRooms walks rooms across two gateways: alice (gateway 0) creates a
// public room, bob (gateway 1) finds and joins it, they talk and type,
// carol (gateway 0, never a member) is refused everything in it and gets
// none of it; a private room is found and joined only after an invite;
// leaving ends it all.
func TestRooms(t *testing.T) {
	s := startBrowserStack(t, roomsEnv...)
	aliceID, aliceCookie := registerLogin(t, s.gateways[0], "alice", "Alice", "rooms-words-2026")
	bobID, bobCookie := registerLogin(t, s.gateways[1], "bob", "Bob", "rooms-words-2026")
	carolID, carolCookie := registerLogin(t, s.gateways[0], "carol", "Carol", "rooms-words-2026")
	alice, _ := dialChat(t, s.gateways[0], aliceCookie, 0)
	bob, _ := dialChat(t, s.gateways[1], bobCookie, 0)
	carol, _ := dialChat(t, s.gateways[0], carolCookie, 0)

	room := alice.createRoom(t, "c1", "Go fans", "public")
	alice.expect(t, "joined", typed("joined"))

	// carol is not in it: refused alike everywhere.
	for _, f := range []struct{ frame, id string }{
		{fmt.Sprintf(`{"type":"send","id":"x1","to":%s,"text":"hi"}`, toRoom(room)), "x1"},
		{fmt.Sprintf(`{"type":"history","id":"x2","to":%s}`, toRoom(room)), "x2"},
		{fmt.Sprintf(`{"type":"read","id":"x3","to":%s,"seq":1}`, toRoom(room)), "x3"},
		{fmt.Sprintf(`{"type":"typing","id":"x4","to":%s}`, toRoom(room)), "x4"},
		{fmt.Sprintf(`{"type":"members","id":"x5","room":%q}`, room), "x5"},
		{fmt.Sprintf(`{"type":"leave","id":"x6","room":%q}`, room), "x6"},
		{fmt.Sprintf(`{"type":"invite","id":"x7","room":%q,"user":%q}`, room, carolID), "x7"},
		{`{"type":"send","id":"x8","to":{"room":"nosuchroom"},"text":"hi"}`, "x8"},
	} {
		carol.wantError(t, f.frame, f.id, "unknown_room")
	}

	// bob finds it by any part of its name, in any case, and joins.
	bob.send(t, `{"type":"rooms","id":"q1","query":"FAN"}`)
	found := bob.expect(t, "rooms answer", typed("rooms"))
	if !strings.Contains(fmt.Sprint(found["rooms"]), room) {
		t.Fatalf("rooms for bob: %v, want %s", found["rooms"], room)
	}
	bob.send(t, fmt.Sprintf(`{"type":"join","room":%q}`, room))
	if j := bob.expect(t, "joined", typed("joined")); j["room"].(map[string]any)["members"] != 2.0 {
		t.Fatalf("joined: %v, want 2 members", j)
	}
	if m := alice.expect(t, "member", typed("member")); m["joined"] != true || m["user"].(map[string]any)["id"] != bobID || m["members"] != 2.0 {
		t.Fatalf("member frame: %v", m)
	}

	// They talk and type, across gateways.
	bob.say(t, "b1", toRoom(room), "hello fans")
	alice.expect(t, "bob's room message", func(o map[string]any) bool { return o["type"] == "message" && o["id"] == "b1" })
	alice.send(t, fmt.Sprintf(`{"type":"typing","to":%s}`, toRoom(room)))
	if ty := bob.expect(t, "typing", typed("typing")); ty["user"].(map[string]any)["id"] != aliceID {
		t.Fatalf("typing: %v", ty)
	}
	alice.send(t, fmt.Sprintf(`{"type":"members","id":"m1","room":%q}`, room))
	if m := alice.expect(t, "members", typed("members")); m["total"] != 2.0 || len(m["members"].([]any)) != 2 {
		t.Fatalf("members: %v", m)
	}

	// A private room: invisible and closed to carol until alice invites her.
	secret := alice.createRoom(t, "c2", "Secret plans", "private")
	carol.send(t, `{"type":"rooms","id":"q2","query":"secret"}`)
	if r := carol.expect(t, "rooms answer", typed("rooms")); len(r["rooms"].([]any)) != 0 {
		t.Fatalf("carol sees private rooms: %v", r)
	}
	carol.wantError(t, fmt.Sprintf(`{"type":"join","id":"j1","room":%q}`, secret), "j1", "unknown_room")
	alice.send(t, fmt.Sprintf(`{"type":"invite","id":"i1","room":%q,"user":%q}`, secret, carolID))
	alice.expect(t, "invite echo", func(o map[string]any) bool { return o["type"] == "invited" && o["id"] == "i1" })
	if inv := carol.expect(t, "invited", typed("invited")); inv["by"].(map[string]any)["id"] != aliceID {
		t.Fatalf("invited: %v", inv)
	}
	carol.send(t, `{"type":"rooms","id":"q3","query":""}`)
	if r := carol.expect(t, "rooms answer", typed("rooms")); !strings.Contains(fmt.Sprint(r["rooms"]), "invited:true") {
		t.Fatalf("carol's rooms lack the invite: %v", r)
	}
	carol.send(t, fmt.Sprintf(`{"type":"join","room":%q}`, secret))
	carol.expect(t, "joined", typed("joined"))
	carol.say(t, "k1", toRoom(secret), "count me in")
	alice.expect(t, "carol's message", func(o map[string]any) bool { return o["type"] == "message" && o["id"] == "k1" })

	// bob leaves: his sockets are told, alice sees him go, and he is out.
	bob.send(t, fmt.Sprintf(`{"type":"leave","room":%q}`, room))
	bob.expect(t, "left", typed("left"))
	if m := alice.expect(t, "member left", typed("member")); m["joined"] != false || m["members"] != 1.0 {
		t.Fatalf("member frame: %v", m)
	}
	bob.wantError(t, fmt.Sprintf(`{"type":"send","id":"b2","to":%s,"text":"still here?"}`, toRoom(room)), "b2", "unknown_room")
	bob.wantError(t, `{"type":"leave","id":"l1","room":"lobby"}`, "l1", "lobby_fixed")

	// carol never got anything of the public room: a dm marks the end.
	alice.say(t, "a9", toUser(carolID), "done")
	carol.waitFor(t, "the marker", func(o map[string]any) bool {
		if o["type"] == "message" && o["to"].(map[string]any)["room"] == room {
			t.Fatalf("carol got a message of a room she is not in: %v", o)
		}
		if o["type"] == "typing" || o["type"] == "member" {
			t.Fatalf("carol got an event of a room she is not in: %v", o)
		}
		return o["type"] == "message" && o["id"] == "a9"
	})
	// Nor does resume replay it to her: only her rooms, on either gateway.
	again, _ := dialChat(t, s.gateways[1], carolCookie, 1)
	var replayed []string
	again.waitFor(t, "resumed", func(o map[string]any) bool {
		if o["type"] == "message" {
			if o["to"].(map[string]any)["room"] == room {
				t.Fatalf("resume replayed to carol a message of a room she is not in: %v", o)
			}
			replayed = append(replayed, o["id"].(string))
		}
		return o["type"] == "resumed"
	})
	if !slices.Contains(replayed, "k1") || !slices.Contains(replayed, "a9") {
		t.Fatalf("carol's resume replayed %v, want her private room's k1 and alice's a9", replayed)
	}
	// A repeated invite is no news to the one invited.
	alice.send(t, fmt.Sprintf(`{"type":"invite","id":"i2","room":%q,"user":%q}`, secret, bobID))
	alice.expect(t, "invite echo", func(o map[string]any) bool { return o["type"] == "invited" && o["id"] == "i2" })
	alice.send(t, fmt.Sprintf(`{"type":"invite","id":"i3","room":%q,"user":%q}`, secret, bobID))
	alice.expect(t, "invite echo", func(o map[string]any) bool { return o["type"] == "invited" && o["id"] == "i3" })
	alice.say(t, "a10", toUser(bobID), "marker")
	invites := 0
	bob.waitFor(t, "the marker", func(o map[string]any) bool {
		if o["type"] == "invited" {
			invites++
		}
		return o["type"] == "message" && o["id"] == "a10"
	})
	if invites != 1 {
		t.Fatalf("bob got %d invited frames for two invites to one room, want 1", invites)
	}
	// Sending is reading, and the other person is told: alice's send
	// moved her cursor, so bob sees she has seen up to it.
	bob.expect(t, "alice's seen", func(o map[string]any) bool {
		return o["type"] == "seen" && o["to"].(map[string]any)["user"] == aliceID
	})
}

// TestRoomLimits: each limit refused at its edge with its code, and the
// lobby fixed.
func TestRoomLimits(t *testing.T) {
	s := startBrowserStack(t, append(roomsEnv, "ROOM_CREATES_PER_HOUR=3", "ROOMS_PER_USER=2", "ROOM_MEMBERS_MAX=2", "INVITES_PER_HOUR=1")...)
	_, aliceCookie := registerLogin(t, s.gateways[0], "alice", "Alice", "rooms-words-2026")
	bobID, bobCookie := registerLogin(t, s.gateways[1], "bob", "Bob", "rooms-words-2026")
	carolID, carolCookie := registerLogin(t, s.gateways[0], "carol", "Carol", "rooms-words-2026")
	alice, _ := dialChat(t, s.gateways[0], aliceCookie, 0)
	bob, _ := dialChat(t, s.gateways[1], bobCookie, 0)
	carol, _ := dialChat(t, s.gateways[0], carolCookie, 0)

	alice.wantError(t, `{"type":"room_create","id":"n0","name":"   "}`, "n0", "bad_name")
	alice.wantError(t, fmt.Sprintf(`{"type":"room_create","id":"n1","name":%q}`, strings.Repeat("é", 65)), "n1", "bad_name")
	alice.wantError(t, `{"type":"room_create","id":"n2","name":"bell\u0007"}`, "n2", "bad_name")
	alice.wantError(t, `{"type":"room_create","id":"n3","name":"ok","visibility":"secret"}`, "n3", "bad_visibility")
	full := alice.createRoom(t, "c1", strings.Repeat("é", 64), "public") // 64 characters: the most
	second := alice.createRoom(t, "c2", "second", "private")
	// INVITES_PER_HOUR=1: one invite, then quota_exceeded.
	alice.send(t, fmt.Sprintf(`{"type":"invite","id":"i1","room":%q,"user":%q}`, second, bobID))
	alice.expect(t, "invite echo", func(o map[string]any) bool { return o["type"] == "invited" && o["id"] == "i1" })
	alice.wantError(t, fmt.Sprintf(`{"type":"invite","id":"i2","room":%q,"user":%q}`, second, carolID), "i2", "quota_exceeded")
	// ROOMS_PER_USER=2: a third room is one too many.
	alice.wantError(t, `{"type":"room_create","id":"c3","name":"third"}`, "c3", "too_many_rooms")
	// ROOM_MEMBERS_MAX=2: bob is the second member, carol one too many.
	bob.send(t, fmt.Sprintf(`{"type":"join","room":%q}`, full))
	bob.expect(t, "joined", typed("joined"))
	carol.wantError(t, fmt.Sprintf(`{"type":"join","id":"j1","room":%q}`, full), "j1", "room_full")
	// ROOM_CREATES_PER_HOUR=3: leaving makes room for a third; the
	// fourth within the hour is refused, saying when.
	alice.send(t, fmt.Sprintf(`{"type":"leave","room":%q}`, full))
	alice.expect(t, "left", typed("left"))
	alice.createRoom(t, "c4", "third", "private")
	alice.send(t, `{"type":"room_create","id":"c5","name":"fourth"}`)
	if e := alice.expect(t, "quota refusal", errorFor("c5")); e["code"] != "quota_exceeded" || e["retry_after"].(float64) < 1 || e["retry_after"].(float64) > 3600 {
		t.Fatalf("fourth room: %v, want quota_exceeded with retry_after within the hour", e)
	}
}

// TestRoomCreationOff: ROOM_CREATES_PER_HOUR=0 turns creating rooms off,
// with quota_exceeded, and the gateway carries on.
func TestRoomCreationOff(t *testing.T) {
	s := startBrowserStack(t, append(roomsEnv, "ROOM_CREATES_PER_HOUR=0")...)
	aliceID, aliceCookie := registerLogin(t, s.gateways[0], "alice", "Alice", "rooms-words-2026")
	_, bobCookie := registerLogin(t, s.gateways[0], "bob", "Bob", "rooms-words-2026")
	alice, _ := dialChat(t, s.gateways[0], aliceCookie, 0)
	alice.wantError(t, `{"type":"room_create","id":"c1","name":"nope"}`, "c1", "quota_exceeded")
	alice.wantError(t, `{"type":"room_create","id":"c2","name":"still nope"}`, "c2", "quota_exceeded")
	bob, _ := dialChat(t, s.gateways[0], bobCookie, 0)
	bob.say(t, "b1", toUser(aliceID), "the gateway is still here")
}
