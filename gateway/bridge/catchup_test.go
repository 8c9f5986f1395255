package bridge

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/poll"
	"github.com/natter/natter/services/token"
)

// A catch-up that cannot read the stream (here: it fails; in the field,
// no leader for catchUpTimeout, or more than maxCatchUp messages) falls
// back to what every socket can do alone: each is closed for resume,
// and replays from the stream itself.
func TestFailedCatchUpClosesForResume(t *testing.T) {
	h, nc, gw := newTestHub(t)
	reads := make(chan uint64, 1)
	h.readSince = func(_ context.Context, after uint64, _ []string, _ int, _ func(string, []byte, uint64) error) (bool, error) {
		reads <- after
		return false, errors.New("stream unreachable")
	}
	h.noteSeq(41)
	var recs []*recorder
	for _, user := range []string{"ann", "bob"} {
		r := newRecorder()
		c := &client{gw: gw, conn: r, claims: &token.Claims{}, user: chat.User{ID: user}}
		if err := h.join(c, func([]string) []byte { return []byte(`{"type":"hello"}`) }); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	select {
	case after := <-reads:
		if after != 41 {
			t.Fatalf("catch-up read from above %d, want above 41 (the highest seq dispatched)", after)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no catch-up within 10s of a reconnect with nothing arriving")
	}
	poll.Until(t, 5*time.Second, func() error {
		for i, r := range recs {
			if r.CloseCode() != chat.CloseResume {
				return fmt.Errorf("socket %d closed with %d, want %d", i, r.CloseCode(), chat.CloseResume)
			}
		}
		return nil
	})
}

// stuckSocket is a socket whose client reads nothing: its queue stays
// more than half full.
type stuckSocket struct{ *recorder }

func (s stuckSocket) WaitHalf(deadline time.Time) bool {
	select {
	case <-time.After(time.Until(deadline)):
	case <-s.Closing():
	}
	return false
}

// Clients that do not read hold a catch-up up at most catchUpWriteWait
// in all, however many they are, and are closed for resume; a socket
// that keeps up is never closed by it.
func TestCatchUpWaitsForSlowSocketsWithinItsBudget(t *testing.T) {
	h, _, gw := newTestHub(t)
	join := func(user string, conn socket) {
		c := &client{gw: gw, conn: conn, claims: &token.Claims{}, user: chat.User{ID: user}}
		if err := h.join(c, func([]string) []byte { return []byte(`{"type":"hello"}`) }); err != nil {
			t.Fatal(err)
		}
	}
	var stuck []stuckSocket
	for i := range 5 {
		s := stuckSocket{newRecorder()}
		stuck = append(stuck, s)
		join(fmt.Sprintf("stuck%d", i), s)
	}
	reader := newRecorder()
	join("reader", reader)
	w := &catchUpWrites{h: h}
	start := time.Now()
	for range 3 { // three chunks
		w.waitForRoom()
	}
	took := time.Since(start)
	if limit := catchUpWriteWait + 3*h.chunk.grace + time.Second; took > limit {
		t.Fatalf("5 stuck sockets held the catch-up %s, want at most %s", took, limit)
	}
	for i, s := range stuck {
		if s.CloseCode() != chat.CloseResume {
			t.Errorf("stuck socket %d closed with %d, want %d", i, s.CloseCode(), chat.CloseResume)
		}
	}
	if reader.IsClosing() {
		t.Errorf("the socket that keeps up was closed (%d)", reader.CloseCode())
	}
	if w.slow != len(stuck) {
		t.Errorf("%d sockets counted slow, want %d", w.slow, len(stuck))
	}
}
