package main

import (
	"encoding/json"
	"testing"

	"github.com/natter/natter/services/chat"
)

// The hub turns presence changes into frames for every local socket, in
// revision order, and ignores changes older than what it has applied.
func TestPresenceChangesReachSockets(t *testing.T) {
	e := startChat(t, 1, nil)
	alice, _ := e.dial(t, e.gws[0], "alice")
	if l := alice.nextPresence(t); l["users"] == nil {
		t.Fatalf("first presence frame = %v, want the list", l)
	}
	bob, _ := e.dial(t, e.gws[0], "bob")
	bob.nextPresence(t)

	publish := func(user string, online bool, rev uint64) {
		t.Helper()
		b, _ := json.Marshal(chat.PresenceEvent{User: chat.User{ID: user, Name: user + "!"}, Online: online, Rev: rev})
		if err := e.nc.Publish("presence.changed."+user, b); err != nil {
			t.Fatal(err)
		}
	}
	publish("carol", true, 10)
	publish("carol", false, 9) // older: already reflected, ignored
	publish("dave", true, 11)
	publish("carol", false, 12)
	for _, c := range []*wsClient{alice, bob} {
		for _, want := range []struct {
			id     string
			online bool
		}{{"carol", true}, {"dave", true}, {"carol", false}} {
			f := c.nextPresence(t)
			u, _ := f["user"].(map[string]any)
			if u["id"] != want.id || f["online"] != want.online || u["name"] != want.id+"!" {
				t.Fatalf("presence frame %v, want %s online=%v", f, want.id, want.online)
			}
		}
	}
	// A new socket gets the current list.
	carol, _ := e.dial(t, e.gws[0], "carol")
	l := carol.nextPresence(t)
	users, _ := l["users"].([]any)
	if len(users) != 1 || users[0].(map[string]any)["id"] != "dave" {
		t.Fatalf("list for a new socket = %v, want [dave]", l)
	}
}
