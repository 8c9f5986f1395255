package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// entry is a bucket update as a watch delivers it.
type entry struct {
	key   string
	value string
	rev   uint64
	op    jetstream.KeyValueOp
}

func (e entry) Bucket() string                  { return "presence" }
func (e entry) Key() string                     { return e.key }
func (e entry) Value() []byte                   { return []byte(e.value) }
func (e entry) Revision() uint64                { return e.rev }
func (e entry) Created() time.Time              { return time.Unix(int64(e.rev), 0) }
func (e entry) Delta() uint64                   { return 0 }
func (e entry) Operation() jetstream.KeyValueOp { return e.op }

// Steps of a tracker test, in a compact form:
//
//	"L gw E"        lease of gw put with epoch E
//	"LX gw"         lease of gw expired (purge marker)
//	"S user gw c E" socket put (E "-" for none: a gateway before leases)
//	"D user gw c"   socket deleted (goodbye)
//	"X user gw c"   socket entry expired
//	"wait"          the pending grace passes, then a sweep
func step(s string, rev uint64) (entry, bool) {
	f := strings.Fields(s)
	switch f[0] {
	case "L":
		return entry{key: "gateway/" + f[1], value: fmt.Sprintf(`{"gateway":%q,"epoch":%q}`, f[1], f[2]), rev: rev, op: jetstream.KeyValuePut}, true
	case "LX":
		return entry{key: "gateway/" + f[1], rev: rev, op: jetstream.KeyValuePurge}, true
	case "S":
		epoch := f[4]
		if epoch == "-" {
			epoch = ""
		}
		return entry{key: f[1] + "." + f[2] + "." + f[3], value: fmt.Sprintf(`{"user":%q,"since":"2026-01-01T00:00:00Z","epoch":%q}`, f[1], epoch), rev: rev, op: jetstream.KeyValuePut}, true
	case "D":
		return entry{key: f[1] + "." + f[2] + "." + f[3], rev: rev, op: jetstream.KeyValueDelete}, true
	case "X":
		return entry{key: f[1] + "." + f[2] + "." + f[3], rev: rev, op: jetstream.KeyValuePurge}, true
	}
	return entry{}, false
}

func TestTracker(t *testing.T) {
	tests := []struct {
		name    string
		steps   []string
		changes string // "+user@rev", "-user@rev", "-user@rev!" (expired)
		online  string // user:sockets
		dead    string // keys left to delete
	}{
		{
			name:    "lease then sockets: online at the first socket",
			steps:   []string{"L gw1 e1", "S alice gw1 c1 e1", "S alice gw1 c2 e1", "L gw1 e1"},
			changes: "+alice@2", online: "alice:2",
		},
		{
			name:    "goodbye of the last socket",
			steps:   []string{"L gw1 e1", "S alice gw1 c1 e1", "D alice gw1 c1"},
			changes: "+alice@2 -alice@3",
		},
		{
			name:    "expired lease: its users offline, its keys to delete",
			steps:   []string{"L gw1 e1", "S alice gw1 c1 e1", "S bob gw1 c2 e1", "LX gw1"},
			changes: "+alice@2 +bob@3 -alice@4! -bob@4!",
			dead:    "alice.gw1.c1 bob.gw1.c2",
		},
		{
			name:    "a user on two gateways stays online when one dies",
			steps:   []string{"L gw1 e1", "L gw2 f1", "S alice gw1 c1 e1", "S alice gw2 c2 f1", "LX gw1"},
			changes: "+alice@3", online: "alice:1", dead: "alice.gw1.c1",
		},
		{
			name: "socket read before its lease: online at the lease",
			// A watch behind: the lease's creation was overwritten by a
			// refresh after the socket.
			steps:   []string{"S alice gw1 c1 e1", "L gw1 e1"},
			changes: "+alice@2", online: "alice:1",
		},
		{
			name: "a socket written under an expired lease never counts",
			// A paused gateway's socket, stored after its lease expired;
			// the gateway comes back with a new epoch.
			steps:   []string{"L gw1 e1", "S alice gw1 c1 e1", "LX gw1", "S bob gw1 c2 e1", "L gw1 e2", "S carol gw1 c3 e2"},
			changes: "+alice@2 -alice@3! +carol@6", online: "carol:1",
			dead: "alice.gw1.c1 bob.gw1.c2",
		},
		{
			name:    "a socket whose lease never shows is dead after the grace",
			steps:   []string{"S alice gw9 c1 e1", "wait"},
			changes: "", dead: "alice.gw9.c1",
		},
		{
			name:    "deleted dead keys are not deleted again",
			steps:   []string{"L gw1 e1", "S alice gw1 c1 e1", "LX gw1", "D alice gw1 c1"},
			changes: "+alice@2 -alice@3!",
		},
		{
			name:    "sockets of gateways before leases: live until they expire",
			steps:   []string{"S alice old c1 -", "S alice old c1 -", "L gw1 e1", "S alice gw1 c2 e1", "X alice old c1", "D alice gw1 c2"},
			changes: "+alice@1 -alice@6",
		},
		{
			name:    "legacy socket expiry is an expiration",
			steps:   []string{"S alice old c1 -", "X alice old c1"},
			changes: "+alice@1 -alice@2!",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Unix(1e9, 0)
			tr := newTracker(time.Minute)
			tr.now = func() time.Time { return now }
			var changes []string
			for i, s := range tt.steps {
				if s == "wait" {
					now = now.Add(2 * time.Minute)
					continue
				}
				e, ok := step(s, uint64(i+1))
				if !ok {
					t.Fatalf("bad step %q", s)
				}
				for _, c := range tr.apply(e) {
					changes = append(changes, formatChange(c))
				}
			}
			dead := tr.sweep()
			if got := strings.Join(changes, " "); got != tt.changes {
				t.Errorf("changes = %q, want %q", got, tt.changes)
			}
			if got := formatOnline(tr); got != tt.online {
				t.Errorf("online = %q, want %q", got, tt.online)
			}
			keys := slices.Sorted(maps.Keys(dead))
			if got := strings.Join(keys, " "); got != tt.dead {
				t.Errorf("dead keys = %q, want %q", got, tt.dead)
			}
			if _, live := tr.counts(); live != sumSockets(tr) {
				t.Errorf("live sockets %d, users' sockets %d", live, sumSockets(tr))
			}
		})
	}
}

func formatChange(c change) string {
	sign, bang := "+", ""
	if !c.online {
		sign = "-"
	}
	if c.expired {
		bang = "!"
	}
	return fmt.Sprintf("%s%s@%d%s", sign, c.user, c.rev, bang)
}

func formatOnline(tr *tracker) string {
	list, _ := tr.online()
	var out []string
	for _, u := range list {
		out = append(out, fmt.Sprintf("%s:%d", u.ID, u.Sockets))
	}
	return strings.Join(out, " ")
}

func sumSockets(tr *tracker) int {
	list, _ := tr.online()
	n := 0
	for _, u := range list {
		n += u.Sockets
	}
	return n
}
