package bridge

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/poll"
	"github.com/natter/natter/services/token"
)

// Two first sockets of one user that join at once both subscribe (the
// tabs of a user after a 4011, all reconnecting together); what the
// loser's subscriptions received before they were dropped must not reach
// the user's sockets a second time.
func TestRacingFirstSocketsDeliverOnce(t *testing.T) {
	h, nc, gw := newTestHub(t)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	h.loadRooms = func(ctx context.Context, user string) ([]string, error) {
		first := false
		once.Do(func() { first = true })
		if first { // the first socket's rooms read stalls, its subscriptions live
			close(entered)
			<-release
		}
		return nil, nil
	}
	socket := func() (*client, *recorder) {
		r := newRecorder()
		return &client{gw: gw, conn: r, claims: &token.Claims{}, user: chat.User{ID: "bob"}}, r
	}
	hello := func([]string) []byte { return []byte(`{"type":"hello"}`) }
	c1, r1 := socket()
	c2, r2 := socket()
	done := make(chan error, 1)
	go func() { done <- h.join(c1, hello) }()
	<-entered
	if err := h.join(c2, hello); err != nil { // wins the race
		t.Fatal(err)
	}
	c2.goLive(0, stateHolding)
	dm := func(id string, seq, last int) {
		msg := nats.NewMsg(dmPrefix + "ann.bob")
		msg.Header.Set(chat.SequenceHeader, fmt.Sprint(seq))
		msg.Header.Set(chat.LastSequenceHeader, fmt.Sprint(last))
		msg.Data = chat.Encode(chat.Message{ID: id, From: chat.User{ID: "ann"}, To: chat.To{User: "bob"}, Text: "hi", TS: time.Now()})
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	dm("m1", 7, 0)
	// Once the server has answered a flush, both subscriptions have m1 in
	// the hub's queue.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c1.goLive(0, stateHolding)
	// The queue is read in order: once the next message is at both
	// sockets, m1's copies have all been dispatched.
	dm("m2", 8, 7)
	count := func(r *recorder, id string) int {
		n := 0
		for _, f := range r.sentFrames() {
			n += bytes.Count(f, []byte(`"id":"`+id+`"`))
		}
		return n
	}
	poll.Until(t, 5*time.Second, func() error {
		if count(r1, "m2") == 0 || count(r2, "m2") == 0 {
			return fmt.Errorf("m2 not at both sockets yet")
		}
		return nil
	})
	if n1, n2 := count(r1, "m1"), count(r2, "m1"); n1 > 1 || n2 != 1 {
		t.Fatalf("m1 reached the first socket %d times and the second %d; want at most once, and once", n1, n2)
	}
}
