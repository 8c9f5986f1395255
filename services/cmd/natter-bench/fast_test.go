package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

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

// readFrames splits frames into objects whatever the read boundaries,
// reports a presence object of any size by its type, and decodes the rest.
func TestReadFrames(t *testing.T) {
	ts := time.Now()
	msg, err := chat.MessageFrameBytes(chat.Encode(chat.Message{ID: "m1", From: chat.User{ID: "u1", Name: "a"}, To: chat.To{Room: "lobby"}, Text: stamp(ts), TS: ts}), 7)
	if err != nil {
		t.Fatal(err)
	}
	users := make([]chat.User, 3000) // a list far bigger than the read buffer
	for i := range users {
		users[i] = chat.User{ID: fmt.Sprintf("u%d", i), Name: "someone"}
	}
	list := chat.Encode(chat.PresenceListFrame{Type: chat.FramePresence, Users: users})
	change := `{"type":"presence","user":{"id":"u1"},"online":true}`
	frames := [][]byte{
		[]byte(`{"type":"hello","seq":3}` + "\n" + string(list)),
		[]byte(string(msg) + "\n" + change + "\n" + `{"type":"ack","id":"m2","seq":8}`),
		[]byte(`{"type":"error","id":"m3","code":"rate_limited"}`),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		for _, f := range frames {
			if err := conn.WriteMessage(websocket.TextMessage, f); err != nil {
				return
			}
		}
		_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		_, _, _ = conn.ReadMessage()
	}))
	defer srv.Close()
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var got []string
	err = readFrames(conn, func(f frame, _ time.Time) {
		got = append(got, fmt.Sprintf("%s/%s/%d/%s/%s/%d", f.Type, f.ID, f.Seq, f.Code, f.Text, f.Size))
	})
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("readFrames ended with %v", err)
	}
	want := []string{"hello//3///0", fmt.Sprintf("presence//0///%d", len(list)), "message/m1/0//" + stamp(ts) + "/0",
		fmt.Sprintf("presence//0///%d", len(change)), "ack/m2/8///0", "error/m3/0/rate_limited//0"}
	if !slices.Equal(got, want) {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}
