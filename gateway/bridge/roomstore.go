package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
)

// roomStore keeps rooms in the rooms bucket (see chat.RoomsBucket). Every
// change that spans keys goes user entry first: it holds the limits that
// matter (rooms per user, creations per hour) and is what the gateway
// enforces. A join or create that fails after it is undone there; a leave
// is done once the entry says so, its member key and count tidied after
// as well as they can be. What a crash between the writes leaves behind
// is a member key or count off by one: it errs towards listing a member
// who is not one, never towards letting one in.
type roomStore struct {
	kv     jetstream.KeyValue
	limits roomLimits
	log    *slog.Logger
}

// roomLimits are the per-user and per-room bounds (gateway settings).
type roomLimits struct {
	perUser        int // rooms a user is in
	createsPerHour int // rooms a user creates per hour
	maxMembers     int // members of one room
}

// Refusals of room changes, mapped to error codes by the handlers.
var (
	errUnknownRoom  = errors.New("unknown room")
	errTooManyRooms = errors.New("too many rooms")
	errRoomFull     = errors.New("room full")
	errAlready      = errors.New("already so")
)

// errCreateQuota refuses a creation past the hourly limit, with when the
// next is allowed.
type errCreateQuota struct{ at time.Time }

func (e errCreateQuota) Error() string { return "room creations per hour spent" }

// casRetries bounds the compare-and-set attempts of one change (the same
// key changed by someone else at the same moment).
const casRetries = 16

// kvTry bounds one read of the bucket. Any replica answers a read (a
// direct get); one sent to a replica whose node is paused, or was killed
// a moment ago, is never answered, and the next try may go to another
// (the server picks among them). Within one ctx, reads are tried again
// every kvTry (the fault suite's pause scenario refused handshakes for a
// read that used up its whole 2 s on a paused replica); every caller's
// ctx has a deadline.
const kvTry = 500 * time.Millisecond

// getEntry reads key, trying again while tries go unanswered.
func getEntry(ctx context.Context, kv jetstream.KeyValue, key string) (jetstream.KeyValueEntry, error) {
	for {
		tctx, cancel := context.WithTimeout(ctx, kvTry)
		e, err := kv.Get(tctx, key)
		cancel()
		unanswered := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)
		if !unanswered || ctx.Err() != nil {
			return e, err
		}
		select { // no responders comes at once: pace
		case <-ctx.Done():
			return e, err
		case <-time.After(replayRetryWait):
		}
	}
}

// getJSON decodes key's value into v and says its revision (0: no such
// key, v untouched).
func getJSON[T any](ctx context.Context, kv jetstream.KeyValue, key string, v *T) (rev uint64, err error) {
	e, err := getEntry(ctx, kv, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("rooms: get %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("rooms: %s: %w", key, err)
	}
	return e.Revision(), nil
}

// update applies change to key's value by compare-and-set, retrying when
// someone else changed it first; a change's error ends it unapplied.
func update[T any](ctx context.Context, kv jetstream.KeyValue, key string, change func(v *T, exists bool) error) (T, error) {
	for range casRetries {
		var v T
		rev, err := getJSON(ctx, kv, key, &v)
		if err != nil {
			return v, err
		}
		if err := change(&v, rev != 0); err != nil {
			return v, err
		}
		b, _ := json.Marshal(v)
		if rev == 0 {
			_, err = kv.Create(ctx, key, b)
		} else {
			_, err = kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return v, fmt.Errorf("rooms: write %s: %w", key, err)
		}
	}
	var zero T
	return zero, fmt.Errorf("rooms: %s changed under every retry", key)
}

// userRooms is the rooms user is in (not the lobby) and their entry.
func (s roomStore) userRooms(ctx context.Context, user string) (chat.UserRooms, error) {
	key, err := chat.UserRoomsKey(user)
	if err != nil {
		return chat.UserRooms{}, err
	}
	var u chat.UserRooms
	_, err = getJSON(ctx, s.kv, key, &u)
	return u, err
}

// roomsOfUser is the rooms user is in, besides the lobby.
func (s roomStore) roomsOfUser(ctx context.Context, user string) ([]string, error) {
	u, err := s.userRooms(ctx, user)
	return u.Rooms, err
}

func (s roomStore) updateUser(ctx context.Context, user string, change func(u *chat.UserRooms) error) (chat.UserRooms, error) {
	key, err := chat.UserRoomsKey(user)
	if err != nil {
		return chat.UserRooms{}, err
	}
	return update(ctx, s.kv, key, func(u *chat.UserRooms, _ bool) error { return change(u) })
}

// info is room's metadata; errUnknownRoom if there is no such room.
func (s roomStore) info(ctx context.Context, room string) (chat.Room, error) {
	key, err := chat.RoomInfoKey(room)
	if err != nil {
		return chat.Room{}, errUnknownRoom
	}
	var r chat.Room
	rev, err := getJSON(ctx, s.kv, key, &r)
	if err == nil && rev == 0 {
		err = errUnknownRoom
	}
	return r, err
}

// countMember changes room's member count by delta, refusing to pass
// the per-room limit.
func (s roomStore) countMember(ctx context.Context, room string, delta int) (chat.Room, error) {
	key, err := chat.RoomInfoKey(room)
	if err != nil {
		return chat.Room{}, errUnknownRoom
	}
	return update(ctx, s.kv, key, func(r *chat.Room, exists bool) error {
		switch {
		case !exists:
			return errUnknownRoom
		case delta > 0 && r.Members >= s.limits.maxMembers:
			return errRoomFull
		}
		r.Members = max(0, r.Members+delta)
		return nil
	})
}

// create makes a room with user as its first member and owner.
func (s roomStore) create(ctx context.Context, user, name, visibility string) (chat.Room, error) {
	id := newRoomID()
	now := time.Now().UTC()
	_, err := s.updateUser(ctx, user, func(u *chat.UserRooms) error {
		u.Created = slices.DeleteFunc(u.Created, func(t time.Time) bool { return now.Sub(t) >= time.Hour })
		if len(u.Created) >= s.limits.createsPerHour {
			at := now.Add(time.Hour) // a limit of 0: never, as far as anyone can tell
			if len(u.Created) > 0 {
				at = u.Created[0].Add(time.Hour)
			}
			return errCreateQuota{at: at}
		}
		if len(u.Rooms) >= s.limits.perUser {
			return errTooManyRooms
		}
		u.Created = append(u.Created, now)
		u.Rooms = append(u.Rooms, id)
		return nil
	})
	if err != nil {
		return chat.Room{}, err
	}
	r := chat.Room{ID: id, Name: name, Visibility: visibility, Owner: user, Members: 1, Created: now}
	infoKey, _ := chat.RoomInfoKey(id)
	memberKey, _ := chat.RoomMemberKey(id, user)
	b, _ := json.Marshal(r)
	if _, err = s.kv.Create(ctx, infoKey, b); err != nil {
		s.undoUser(user, id, false)
		return chat.Room{}, fmt.Errorf("rooms: create %s: %w", id, err)
	}
	if _, err = s.kv.Put(ctx, memberKey, memberValue(now)); err != nil {
		s.undoUser(user, id, false)
		s.tidy(func(ctx context.Context) error { return s.kv.Delete(ctx, infoKey) })
		return chat.Room{}, fmt.Errorf("rooms: create %s: %w", id, err)
	}
	return r, nil
}

// join makes user a member of room: a public one, or a private one they
// were invited to. errAlready if they are one.
func (s roomStore) join(ctx context.Context, user, room string) (chat.Room, error) {
	r, err := s.info(ctx, room)
	if err != nil {
		return r, err
	}
	invited := false
	_, err = s.updateUser(ctx, user, func(u *chat.UserRooms) error {
		invited = slices.Contains(u.Invites, room)
		switch {
		case slices.Contains(u.Rooms, room):
			return errAlready
		case r.Visibility != chat.Public && !slices.Contains(u.Invites, room):
			return errUnknownRoom // not invited: as if there were no such room
		case len(u.Rooms) >= s.limits.perUser:
			return errTooManyRooms
		}
		u.Invites = slices.DeleteFunc(u.Invites, func(id string) bool { return id == room })
		u.Rooms = append(u.Rooms, room)
		return nil
	})
	if err != nil {
		return r, err
	}
	if r, err = s.countMember(ctx, room, +1); err != nil {
		s.undoUser(user, room, invited)
		return r, err
	}
	memberKey, _ := chat.RoomMemberKey(room, user)
	if _, err := s.kv.Put(ctx, memberKey, memberValue(time.Now().UTC())); err != nil {
		s.undoUser(user, room, invited)
		s.tidy(func(ctx context.Context) error { _, err := s.countMember(ctx, room, -1); return err })
		return r, fmt.Errorf("rooms: join %s: %w", room, err)
	}
	return r, nil
}

// leave ends user's membership of room (errUnknownRoom if they are not
// in it): done once their entry says so. Their member key and the count
// follow as well as they can; a room left by its last member goes, so
// rooms do not pile up. The room is as of after (or as before, when the
// count could not be read).
func (s roomStore) leave(ctx context.Context, user, room string) (chat.Room, error) {
	_, err := s.updateUser(ctx, user, func(u *chat.UserRooms) error {
		if !slices.Contains(u.Rooms, room) {
			return errUnknownRoom
		}
		u.Rooms = slices.DeleteFunc(u.Rooms, func(id string) bool { return id == room })
		return nil
	})
	if err != nil {
		return chat.Room{}, err
	}
	memberKey, _ := chat.RoomMemberKey(room, user)
	s.tidy(func(ctx context.Context) error { return s.kv.Delete(ctx, memberKey) })
	r, err := s.countMember(ctx, room, -1)
	if err != nil {
		s.tidy(func(context.Context) error { return err })
		return chat.Room{ID: room}, nil
	}
	if r.Members == 0 {
		s.tidy(func(ctx context.Context) error { return s.dropEmpty(ctx, room) })
	}
	return r, nil
}

// dropEmpty deletes room's info if it still has no member (a join racing
// in changes its revision first).
func (s roomStore) dropEmpty(ctx context.Context, room string) error {
	key, _ := chat.RoomInfoKey(room)
	e, err := s.kv.Get(ctx, key)
	if err != nil {
		return err
	}
	var r chat.Room
	if json.Unmarshal(e.Value(), &r) != nil || r.Members != 0 {
		return nil
	}
	return s.kv.Delete(ctx, key, jetstream.LastRevision(e.Revision()))
}

// tidy runs a clean-up step whose failure leaves a count or key off by
// one (see roomStore): logged, never refused to the user.
func (s roomStore) tidy(step func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	if err := step(ctx); err != nil && s.log != nil {
		s.log.Warn("rooms: a clean-up step failed", "err", err)
	}
}

// invite lets user join room (private rooms need it); errAlready if they
// are a member or invited already (nothing is written: a repeated invite
// is no news). Past chat.MaxInvites pending, the oldest goes.
func (s roomStore) invite(ctx context.Context, user, room string) error {
	_, err := s.updateUser(ctx, user, func(u *chat.UserRooms) error {
		if slices.Contains(u.Rooms, room) || slices.Contains(u.Invites, room) {
			return errAlready
		}
		u.Invites = append(u.Invites, room)
		if n := len(u.Invites) - chat.MaxInvites; n > 0 {
			u.Invites = u.Invites[n:]
		}
		return nil
	})
	return err
}

// members is the user ids of room's members.
func (s roomStore) members(ctx context.Context, room string) ([]string, error) {
	key, err := chat.RoomMemberKey(room, "x")
	if err != nil {
		return nil, errUnknownRoom
	}
	prefix := key[:len(key)-1]
	l, err := s.kv.ListKeysFiltered(ctx, prefix+"*")
	if err != nil {
		return nil, fmt.Errorf("rooms: members of %s: %w", room, err)
	}
	defer func() { _ = l.Stop() }()
	var ids []string
	for k := range l.Keys() {
		ids = append(ids, k[len(prefix):])
	}
	return ids, nil
}

// undoUser takes room out of user's entry after a change that failed
// half way, giving back the invite the join used (a fresh context: the
// caller's may be what ran out).
func (s roomStore) undoUser(user, room string, invited bool) {
	s.tidy(func(ctx context.Context) error {
		_, err := s.updateUser(ctx, user, func(u *chat.UserRooms) error {
			u.Rooms = slices.DeleteFunc(u.Rooms, func(id string) bool { return id == room })
			if invited && !slices.Contains(u.Invites, room) {
				u.Invites = append(u.Invites, room)
			}
			return nil
		})
		return err
	})
}

func memberValue(since time.Time) []byte {
	b, _ := json.Marshal(chat.RoomMember{Since: since})
	return b
}

// newRoomID is a fresh room id: "r" and 16 hex digits.
func newRoomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "r" + hex.EncodeToString(b)
}
