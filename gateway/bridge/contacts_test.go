package bridge

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natter/natter/gateway/wsconn"
	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/token"
)

// At 15,000 online, a socket's first presence frame holds its contacts
// who are online, at most presMax of them, whatever their number: under
// 32 KiB with names as long as the page shows them.
func TestPartialListBounded(t *testing.T) {
	h := &hub{presMax: 200, online: map[string]chat.User{}, onlineKeys: map[string]string{}, users: map[string]*localUser{}, contactOf: map[string]map[string]struct{}{}}
	for i := range 15000 {
		id := fmt.Sprintf("u%05d", i)
		h.online[id] = chat.User{ID: id, Name: fmt.Sprintf("Someone with a longish name %05d", i), Account: fmt.Sprintf("someone%05d", i)}
	}
	u := &localUser{}
	h.users["me"] = u
	var contacts []string
	for i := range 500 { // more than presMax, half of them offline
		contacts = append(contacts, fmt.Sprintf("u%05d", i*60))
	}
	h.setContacts("me", u, contacts)
	if len(u.contacts) != h.presMax {
		t.Fatalf("%d contacts kept, want presMax %d", len(u.contacts), h.presMax)
	}
	if !h.partialMode() {
		t.Fatal("15,000 online with presMax 200: not partial")
	}
	b := h.partialList("me")
	var f chat.PresenceListFrame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(b) > 32<<10 || len(f.Users) > h.presMax || f.Total != 15000 || !f.Partial {
		t.Fatalf("first presence frame: %d bytes, %d users, total %d, partial %v; want under 32 KiB, at most %d users, total 15000", len(b), len(f.Users), f.Total, f.Partial, h.presMax)
	}
	t.Logf("first presence frame at 15,000 online: %d bytes, %d users", len(b), len(f.Users))
	// Forgetting a user's contacts leaves no index entry behind.
	h.dropContacts("me", u)
	if len(h.contactOf) != 0 {
		t.Fatalf("%d index entries after the user's contacts were dropped", len(h.contactOf))
	}
}

// In partial mode a batch reaches each socket as its user's contacts'
// changes, with the total in the same write; a socket with no contact
// among the changes gets the total alone, and the next total waits its
// second.
func TestPartialBatchRouting(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry())
	gw := &Gateway{metrics: m, limits: Limits{QueueLen: 64, QueueBytes: 1 << 20}}
	h := &hub{presMax: 1, partial: true, online: map[string]chat.User{}, onlineKeys: map[string]string{}, users: map[string]*localUser{},
		local: map[*client]struct{}{}, contactOf: map[string]map[string]struct{}{}, stop: make(chan struct{}),
		flushing: true} // batches are flushed by hand here
	sockets := map[string]*recorder{}
	for _, user := range []string{"ann", "bob"} {
		r := newRecorder()
		c := &client{gw: gw, conn: r, claims: &token.Claims{}, user: chat.User{ID: user}}
		h.users[user] = &localUser{clients: map[*client]struct{}{c: {}}}
		h.local[c] = struct{}{}
		sockets[user] = r
	}
	h.setContacts("ann", h.users["ann"], []string{"cat"})
	h.setOnline(chat.User{ID: "cat"}, true)
	h.setOnline(chat.User{ID: "dan"}, true)
	var l wsconn.Lineup
	h.flushPartial(&l)
	l.Flush()
	ann, bob := sockets["ann"].sentFrames(), sockets["bob"].sentFrames()
	if len(ann) != 1 || string(ann[0]) != `{"type":"presence","user":{"id":"cat","name":""},"online":true}`+"\n"+`{"type":"online_count","total":2}` {
		t.Fatalf("ann got %q, want cat's change and the total in one write", ann)
	}
	if len(bob) != 1 || string(bob[0]) != `{"type":"online_count","total":2}` {
		t.Fatalf("bob got %q, want the total alone", bob)
	}
	h.changes = nil
	h.flushPartial(&l) // within the second: no total yet (flushCount sends it)
	l.Flush()
	if n := len(sockets["bob"].sentFrames()); n != 1 {
		t.Fatalf("bob got %d writes, want the second total held back", n)
	}
	close(h.stop)
}

// A direct message can reach the hub after its recipient's last socket
// here left (it was queued behind others): noting the contact is then a
// no-op, not a crash. Both gateways of the fault suite's NATS kill
// scenario died of this.
func TestNoteContactAfterLastSocketLeft(t *testing.T) {
	h := &hub{presMax: 200, online: map[string]chat.User{}, onlineKeys: map[string]string{}, users: map[string]*localUser{}, contactOf: map[string]map[string]struct{}{}}
	h.noteContact("gone", "ann")
	if len(h.contactOf) != 0 {
		t.Fatalf("contact index %v for a user with no socket here", h.contactOf)
	}
	u := &localUser{contacts: map[string]struct{}{}}
	h.users["here"] = u
	h.noteContact("here", "ann")
	if _, ok := u.contacts["ann"]; !ok {
		t.Fatal("a connected user's new partner is not a contact")
	}
}

// The total's pace: once a second on a small gateway, within the
// presence write budget on a big one, never rarer than countEveryMax.
func TestCountInterval(t *testing.T) {
	for _, tc := range []struct {
		sockets int
		want    time.Duration
	}{
		{0, time.Second},
		{5000, time.Second},
		{15000, 3 * time.Second},
		{1000000, countEveryMax},
	} {
		if got := countInterval(tc.sockets); got != tc.want {
			t.Errorf("countInterval(%d) = %v, want %v", tc.sockets, got, tc.want)
		}
	}
}
