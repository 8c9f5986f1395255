package usercache

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/natter/natter/services/chat"
)

func user(id string) chat.User { return chat.User{ID: id, Name: "Name of " + id, Account: id} }

// clock is a cache's time, moved by the test.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newCache(cfg Config) (*Cache, *clock) {
	c := New(cfg)
	clk := &clock{t: time.Now()}
	c.now = clk.now
	return c, clk
}

func TestSplit(t *testing.T) {
	c, _ := newCache(Config{})
	c.Add(user("alice"), user("bob"))
	tests := []struct {
		name        string
		ids         []string
		wantFound   []string
		wantMissing []string
	}{
		{"all remembered", []string{"bob", "alice"}, []string{"alice", "bob"}, nil},
		{"some missing, in order", []string{"carol", "alice", "dave"}, []string{"alice"}, []string{"carol", "dave"}},
		{"each missing id once", []string{"carol", "carol", "bob", "carol"}, []string{"bob"}, []string{"carol"}},
		{"nothing asked", nil, []string{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			found, missing := c.Split(tt.ids)
			if got := slices.Sorted(maps.Keys(found)); !slices.Equal(got, tt.wantFound) {
				t.Errorf("found %v, want %v", got, tt.wantFound)
			}
			for id, u := range found {
				if u != user(id) {
					t.Errorf("user %q = %+v, want %+v", id, u, user(id))
				}
			}
			if !slices.Equal(missing, tt.wantMissing) {
				t.Errorf("missing %v, want %v", missing, tt.wantMissing)
			}
		})
	}
}

func TestTTL(t *testing.T) {
	const ttl = time.Minute
	c, clk := newCache(Config{TTL: ttl})
	start := clk.t
	c.Add(user("alice"))
	clk.t = start.Add(ttl / 2)
	c.Add(user("bob"))
	// alice again before she expires (two lookups at once): her new
	// name, her first expiry.
	renamed := chat.User{ID: "alice", Name: "Alice Renamed"}
	c.Add(renamed)
	if found, _ := c.Split([]string{"alice"}); found["alice"] != renamed {
		t.Errorf("alice = %+v, want %+v", found["alice"], renamed)
	}
	tests := []struct {
		after       time.Duration
		wantMissing []string
	}{
		{ttl/2 - time.Second, nil},
		{ttl - time.Nanosecond, nil},
		{ttl, []string{"alice"}},
		{ttl + ttl/2, []string{"alice", "bob"}},
	}
	for _, tt := range tests {
		clk.t = start.Add(tt.after)
		if _, missing := c.Split([]string{"alice", "bob"}); !slices.Equal(missing, tt.wantMissing) {
			t.Errorf("after %s: missing %v, want %v", tt.after, missing, tt.wantMissing)
		}
	}
	// Adding again remembers anew, and the expired entries are dropped.
	c.Add(user("alice"))
	if _, missing := c.Split([]string{"alice"}); missing != nil {
		t.Errorf("alice missing after she was added again")
	}
	if c.Len() != 1 {
		t.Errorf("%d users held, want 1 (the expired bob dropped)", c.Len())
	}
}

func TestMaxUsers(t *testing.T) {
	const max = 3
	c, clk := newCache(Config{MaxUsers: max})
	var ids []string
	for i := range max + 2 {
		id := fmt.Sprintf("u%d", i)
		ids = append(ids, id)
		clk.t = clk.t.Add(time.Second)
		c.Add(user(id))
		if c.Len() > max || len(c.order) != c.Len() {
			t.Fatalf("%d users held in a queue of %d, want at most %d, the same", c.Len(), len(c.order), max)
		}
	}
	// The oldest two left; the newest are still remembered.
	if _, missing := c.Split(ids); !slices.Equal(missing, ids[:2]) {
		t.Errorf("missing %v, want the oldest %v", missing, ids[:2])
	}
}

func TestDefaults(t *testing.T) {
	c := New(Config{})
	if c.ttl != DefaultTTL || c.max != DefaultMaxUsers {
		t.Errorf("zero Config: ttl %s, max %d; want %s, %d", c.ttl, c.max, DefaultTTL, DefaultMaxUsers)
	}
}
