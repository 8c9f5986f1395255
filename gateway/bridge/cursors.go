package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
)

// cursors keeps users' read cursors in the read_state bucket: one key per
// user holding every conversation's cursor, so listing a user's
// conversations reads them in one get, and moving one is one
// compare-and-set, which every gateway sees.
type cursors struct{ kv jetstream.KeyValue }

// cursor is how far a user has read one conversation: the last seq shown,
// and how many of the conversation's messages were stored up to it, so
// the unread count is the conversation's count now less N (the stream
// counts a subject's messages cheaply; counting those after a seq takes a
// consumer). Messages that leave the stream (retention) make it a count
// of at most the true one.
type cursor struct {
	Seq uint64 `json:"s"`
	N   uint64 `json:"n"`
}

// maxCursors bounds the cursors kept per user, and so the size of their
// entry: past it the lowest (furthest back in the stream) go.
const maxCursors = 1000

// cursorRetries bounds the compare-and-set attempts of one move (the
// user's other sockets moving other cursors at the same moment).
const cursorRetries = 16

// convKey names conversation to of user in their entry: "room.<id>" or
// "dm.<other user>".
func convKey(to chat.To) string {
	if to.Room != "" {
		return "room." + to.Room
	}
	return "dm." + to.User
}

// all is every cursor of user, by convKey (none: an empty map).
func (cs cursors) all(ctx context.Context, user string) (map[string]cursor, error) {
	m, _, err := cs.get(ctx, user)
	return m, err
}

func (cs cursors) get(ctx context.Context, user string) (map[string]cursor, uint64, error) {
	e, err := cs.kv.Get(ctx, user)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return map[string]cursor{}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read cursors: %w", err)
	}
	m := map[string]cursor{}
	if json.Unmarshal(e.Value(), &m) != nil {
		m = map[string]cursor{} // a corrupt entry: the next move replaces it
	}
	return m, e.Revision(), nil
}

// advance moves user's cursor of conversation key to to, unless it is
// there or beyond already: cursors only move forward. moved says it did.
func (cs cursors) advance(ctx context.Context, user, key string, to cursor) (moved bool, err error) {
	for range cursorRetries {
		m, rev, err := cs.get(ctx, user)
		if err != nil {
			return false, err
		}
		if m[key].Seq >= to.Seq {
			return false, nil
		}
		m[key] = to
		trim(m)
		b, _ := json.Marshal(m)
		if rev == 0 {
			_, err = cs.kv.Create(ctx, user, b)
		} else {
			_, err = cs.kv.Update(ctx, user, b, rev)
		}
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return false, fmt.Errorf("read cursors: %w", err)
		}
	}
	return false, errors.New("read cursors: changed under every retry")
}

// trim drops the lowest cursors past maxCursors.
func trim(m map[string]cursor) {
	if len(m) <= maxCursors {
		return
	}
	seqs := make([]uint64, 0, len(m))
	for _, c := range m {
		seqs = append(seqs, c.Seq)
	}
	slices.Sort(seqs)
	floor := seqs[len(seqs)-maxCursors]
	for k, c := range m {
		if c.Seq < floor && len(m) > maxCursors {
			delete(m, k)
		}
	}
}
