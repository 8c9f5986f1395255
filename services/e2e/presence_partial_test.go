package e2e_test

import (
	"fmt"
	"maps"
	"slices"
	"testing"
)

// presenceView is what a socket knows of presence, from the frames it got.
type presenceView struct {
	users   map[string]bool
	partial bool
	total   int
}

func (v *presenceView) apply(o map[string]any) {
	switch o["type"] {
	case "presence":
		if users, ok := o["users"].([]any); ok {
			v.users = map[string]bool{}
			for _, u := range users {
				v.users[u.(map[string]any)["id"].(string)] = true
			}
			v.partial, _ = o["partial"].(bool)
			total, _ := o["total"].(float64)
			v.total = int(total)
			return
		}
		id := o["user"].(map[string]any)["id"].(string)
		if o["online"] == true {
			v.users[id] = true
		} else {
			delete(v.users, id)
		}
	case "online_count":
		v.total = int(o["total"].(float64))
	}
}

func (v *presenceView) String() string {
	return fmt.Sprintf("%v partial=%v total=%d", slices.Sorted(maps.Keys(v.users)), v.partial, v.total)
}

// follow applies what s receives until the view satisfies want.
func (v *presenceView) follow(t *testing.T, s *chatSocket, what string, want func(*presenceView) bool) {
	t.Helper()
	s.waitFor(t, what, func(o map[string]any) bool {
		v.apply(o)
		return want(v)
	})
}

// TestPresencePartialBeyondLimit: beyond PRESENCE_LIST_MAX online, across
// two gateways, a socket's list is its contacts who are online and the
// total; it hears of its contacts coming and going and only of the
// count for others, finds the others by search, and gets everyone again
// once few are online.
func TestPresencePartialBeyondLimit(t *testing.T) {
	s := startBrowserStack(t, append(roomsEnv, "PRESENCE_LIST_MAX=2")...)
	annID, annCookie := registerLogin(t, s.gateways[0], "ann", "Ann", "partial-words-2026")
	bobID, bobCookie := registerLogin(t, s.gateways[1], "bob", "Bob", "partial-words-2026")
	catID, catCookie := registerLogin(t, s.gateways[0], "cat", "Cat", "partial-words-2026")
	_, danCookie := registerLogin(t, s.gateways[1], "dan", "Dan", "partial-words-2026")
	bob, _ := dialChat(t, s.gateways[1], bobCookie, 0)
	bob.say(t, "b1", toUser(annID), "we are contacts now")
	cat, _ := dialChat(t, s.gateways[0], catCookie, 0)
	dan, _ := dialChat(t, s.gateways[1], danCookie, 0)
	ann, _ := dialChat(t, s.gateways[0], annCookie, 0)

	var v presenceView
	v.follow(t, ann, "a partial list of ann's contacts", func(v *presenceView) bool {
		return v.partial && v.total == 4 && v.users[bobID] && len(v.users) == 1
	})
	// dan is no contact of ann's: she hears the count, not him.
	dan.close()
	ann.waitFor(t, "the count without dan", func(o map[string]any) bool {
		if o["type"] == "presence" && o["user"] != nil && o["user"].(map[string]any)["id"] != bobID {
			t.Fatalf("ann heard of a non-contact: %v", o)
		}
		v.apply(o)
		return v.total == 3
	})
	if !v.partial || len(v.users) != 1 || !v.users[bobID] {
		t.Fatalf("ann's view after dan left: %s, want bob alone, partial", &v)
	}
	ann.send(t, `{"type":"online","id":"o1","query":"CA"}`)
	if f := ann.expect(t, "online answer", typed("online")); f["total"] != 1.0 || !slices.ContainsFunc(f["users"].([]any), func(u any) bool { return u.(map[string]any)["id"] == catID }) {
		t.Fatalf("online search for ca: %v", f)
	}
	// cat writes to ann: a contact now, her presence shown.
	cat.say(t, "c1", toUser(annID), "hello ann")
	v.follow(t, ann, "cat as a contact", func(v *presenceView) bool { return v.users[catID] })
	// bob, a contact, goes: ann hears it while still partial (2 online
	// leaves partial mode only at 1: a tenth fewer, at least one).
	bob.close()
	v.follow(t, ann, "bob leaving", func(v *presenceView) bool { return !v.users[bobID] })
	if !v.partial {
		t.Fatalf("ann's view after bob left: %s, want still partial", &v)
	}
	// Down to one online: everyone again, as a whole list.
	cat.close()
	v.follow(t, ann, "everyone again", func(v *presenceView) bool {
		return !v.partial && len(v.users) == 1 && v.users[annID]
	})
}
