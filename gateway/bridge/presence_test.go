package bridge

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

// Presence changes go out in batches; a socket that joins in the middle of
// one gets the list as of the last batch and the changes since, and from
// the batch only what followed. Every socket ends at the hub's list, and
// none is told a change twice.
func TestPresenceBatchesConverge(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry())
	h := &hub{log: slog.New(slog.NewTextHandler(io.Discard, nil)), m: m, local: map[*client]struct{}{}, online: map[string]chat.User{}, onlineKeys: map[string]string{}}
	gw := &Gateway{metrics: m, limits: Limits{QueueLen: 64, QueueBytes: 1 << 20}}
	join := func() *client {
		c := &client{gw: gw, conn: newRecorder(), claims: &token.Claims{}, state: stateLive}
		h.mu.Lock()
		defer h.mu.Unlock()
		h.local[c] = struct{}{}
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
