package bridge

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
)

// roomDir is every room's metadata, kept from a watch of the rooms
// bucket's info keys: searching public rooms, naming rooms in the
// conversation list and sizing them for typing take no NATS round trip.
// It costs a gateway about 200 bytes a room. A room created on another
// gateway appears here a moment later; what must be exact (joining)
// reads the bucket instead.
type roomDir struct {
	log   *slog.Logger
	stop  func() // ends the watch (it ends with watchRooms' ctx too)
	mu    sync.RWMutex
	rooms map[string]chat.Room
	lower map[string]string // each room's name in lower case, for search
}

// watchRooms loads the rooms' metadata, then keeps it current until ctx
// ends or stop is called.
func watchRooms(ctx context.Context, log *slog.Logger, kv jetstream.KeyValue) (*roomDir, error) {
	ctx, stop := context.WithCancel(ctx)
	d := &roomDir{log: log, stop: stop, rooms: map[string]chat.Room{}, lower: map[string]string{}}
	if err := watchKV(ctx, log, kv, chat.RoomInfoPrefix+"*", chat.RoomsBucket, func(e jetstream.KeyValueEntry, _ bool) { d.apply(e) }); err != nil {
		stop()
		return nil, err
	}
	return d, nil
}

func (d *roomDir) apply(e jetstream.KeyValueEntry) {
	id := strings.TrimPrefix(e.Key(), chat.RoomInfoPrefix)
	d.mu.Lock()
	defer d.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(d.rooms, id)
		delete(d.lower, id)
		return
	}
	var r chat.Room
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		d.log.Warn("unreadable room ignored", "key", e.Key(), "err", err)
		return
	}
	d.rooms[id], d.lower[id] = r, strings.ToLower(r.Name)
}

// set records r as known now (the gateway that changed it knows before
// its watch says so).
func (d *roomDir) set(r chat.Room) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rooms[r.ID], d.lower[r.ID] = r, strings.ToLower(r.Name)
}

// get is a room's metadata, as of the watch.
func (d *roomDir) get(id string) (chat.Room, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	r, ok := d.rooms[id]
	return r, ok
}

// search is a page of the public rooms whose name holds query (any case),
// and the invited ones among them, most members first (invited first of
// all), from offset; more says others follow.
func (d *roomDir) search(query string, invited []string, offset int) ([]chat.Room, bool) {
	q := strings.ToLower(strings.TrimSpace(query))
	isInvited := make(map[string]bool, len(invited))
	for _, id := range invited {
		isInvited[id] = true
	}
	d.mu.RLock()
	found := []chat.Room{}
	for _, r := range d.rooms {
		inv := isInvited[r.ID]
		if (r.Visibility == chat.Public || inv) && strings.Contains(d.lower[r.ID], q) {
			r.Invited = inv
			found = append(found, r)
		}
	}
	d.mu.RUnlock()
	slices.SortFunc(found, func(a, b chat.Room) int {
		if a.Invited != b.Invited {
			if a.Invited {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(b.Members, a.Members), cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	if offset >= len(found) {
		return []chat.Room{}, false
	}
	found = found[offset:]
	return found[:min(len(found), chat.RoomsPage)], len(found) > chat.RoomsPage
}
