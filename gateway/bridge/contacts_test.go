package bridge

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/natter/natter/services/chat"
)

// At 15,000 online, a socket's first presence frame holds its contacts
// who are online, at most presMax of them, whatever their number: under
// 32 KiB with names as long as the page shows them.
func TestPartialListBounded(t *testing.T) {
	h := &hub{presMax: 200, online: map[string]chat.User{}, users: map[string]*localUser{}, contactOf: map[string]map[string]struct{}{}}
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
