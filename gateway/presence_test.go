package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/token"
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

// Presence changes go out in batches; a socket that joins in the middle of
// one gets the list as of the last batch and the changes since, and from
// the batch only what followed. Every socket ends at the hub's list, and
// none is told a change twice.
func TestPresenceBatchesConverge(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry())
	h := &hub{log: slog.New(slog.NewTextHandler(io.Discard, nil)), m: m, room: map[*client]struct{}{}, online: map[string]chat.User{}}
	gw := &gateway{metrics: m, limits: WSLimits{QueueLen: 64, QueueBytes: 1 << 20}}
	join := func() *client {
		c := &client{gw: gw, conn: newRecorder(), claims: &token.Claims{}, state: stateLive}
		h.mu.Lock()
		defer h.mu.Unlock()
		h.room[c] = struct{}{}
		h.presenceOnJoin(c)
		return c
	}
	set := func(id string, online bool) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.setOnline(chat.User{ID: id, Name: strings.ToUpper(id)}, online)
	}
	c1 := join()
	set("ann", true)
	c2 := join() // mid-batch: has seen ann come online
	set("ben", true)
	set("ann", false)
	h.flushPresence()
	c3 := join() // after the batch
	set("cat", true)
	c4 := join()
	h.flushPresence()

	for name, c := range map[string]*client{"c1": c1, "c2": c2, "c3": c3, "c4": c4} {
		state := map[string]bool{}
		seen := map[string]int{}
		for _, queued := range c.conn.(*recorder).sentFrames() {
			for line := range strings.SplitSeq(string(queued), "\n") {
				var f struct {
					Users  []chat.User `json:"users"`
					User   *chat.User  `json:"user"`
					Online bool        `json:"online"`
				}
				if err := json.Unmarshal([]byte(line), &f); err != nil {
					t.Fatalf("%s: %q: %v", name, line, err)
				}
				if f.User == nil {
					for _, u := range f.Users {
						state[u.ID] = true
					}
					continue
				}
				seen[fmt.Sprintf("%s=%v", f.User.ID, f.Online)]++
				if f.Online {
					state[f.User.ID] = true
				} else {
					delete(state, f.User.ID)
				}
			}
		}
		if fmt.Sprint(state) != fmt.Sprint(map[string]bool{"ben": true, "cat": true}) {
			t.Errorf("%s ends with %v, want ben and cat online", name, state)
		}
		for change, n := range seen {
			if n > 1 {
				t.Errorf("%s was told %s %d times", name, change, n)
			}
		}
	}
}
