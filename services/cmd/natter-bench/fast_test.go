package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/natter/natter/services/chat"
)

// The fast path reads what the JSON decoder would, for the gateway's
// message frames, and declines everything else.
func TestFastMessage(t *testing.T) {
	ts := time.Now()
	msg, err := chat.MessageFrameBytes(chat.Encode(chat.Message{ID: "m1", From: chat.User{ID: "u1", Name: `q"uote`}, To: chat.To{Room: "lobby"}, Text: stamp(ts), TS: ts}), 7)
	if err != nil {
		t.Fatal(err)
	}
	fr, ok := fastMessage(msg)
	var want frame
	if err := json.Unmarshal(msg, &want); err != nil {
		t.Fatal(err)
	}
	if !ok || fr.Type != want.Type || fr.Text != want.Text || fr.ID != want.ID || fr.ID != "m1" {
		t.Fatalf("fast %+v %v, decoder %+v", fr, ok, want)
	}
	if got, ok := unstamp(fr.Text); !ok || !got.Equal(time.Unix(0, ts.UnixNano())) {
		t.Fatalf("stamp %v %v", got, ok)
	}
	for _, other := range []string{`{"type":"ack","id":"m1","seq":7}`, `{"type":"message","text":"hello"}`, `{"type":"hello"}`} {
		if _, ok := fastMessage([]byte(other)); ok {
			t.Fatalf("fast path took %s", other)
		}
	}
}

// A pacer that fell behind sends the missed sends at once, then keeps the
// rate; it stops after rate x duration sends.
func TestPacerCatchesUp(t *testing.T) {
	p := newPacer(time.Now().Add(-time.Second), 100, 1200*time.Millisecond)
	begin := time.Now()
	n := 0
	for p.next(t.Context()) {
		n++
		if n == 100 && time.Since(begin) > 500*time.Millisecond {
			t.Fatalf("the 100 overdue sends took %v", time.Since(begin))
		}
	}
	if n != 120 {
		t.Fatalf("sent %d, want 120", n)
	}
	if d := time.Since(begin); d < 150*time.Millisecond {
		t.Fatalf("the 20 sends due later took only %v", d)
	}
}

func TestGatewayPID(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"connect", "-gateway-pid", "42", "-sockets", "10"}, 42},
		{[]string{"connect", "--gateway-pid=7"}, 7},
		{[]string{"connect", "-sockets", "10"}, 0},
		{[]string{"connect", "-gateway-pid"}, 0},
	} {
		if got := gatewayPID(tc.args); got != tc.want {
			t.Errorf("gatewayPID(%q) = %d, want %d", tc.args, got, tc.want)
		}
	}
}
