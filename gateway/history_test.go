package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/poll"
)

// sendOK sends a message and waits for its ack; it returns the seq.
func sendOK(t *testing.T, c *wsClient, id, to, text string) uint64 {
	t.Helper()
	c.send(t, fmt.Sprintf(`{"type":"send","id":%q,"to":%s,"text":%q}`, id, to, text))
	ack := c.nextOf(t, "ack")
	if ack["id"] != id {
		t.Fatalf("ack %v, want id %s", ack, id)
	}
	return seq(ack)
}

func texts(msgs []any) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.(map[string]any)["text"].(string))
	}
	return out
}

func TestHistoryPages(t *testing.T) {
	e := startChat(t, 1, nil)
	alice, _ := e.dial(t, e.gws[0], "alice")
	bob, _ := e.dial(t, e.gws[0], "bob")
	carol, _ := e.dial(t, e.gws[0], "carol")
	const lobby, toBob, toAlice = `{"room":"lobby"}`, `{"user":"bob"}`, `{"user":"alice"}`
	for i := 1; i <= 5; i++ {
		sendOK(t, alice, fmt.Sprintf("l%d", i), lobby, fmt.Sprintf("lobby %d", i))
	}
	sendOK(t, alice, "d1", toBob, "a->b 1")
	sendOK(t, bob, "d2", toAlice, "b->a 1")
	sendOK(t, carol, "d3", toBob, "c->b 1")
	sendOK(t, alice, "d4", toBob, "a->b 2")

	history := func(c *wsClient, frame string) map[string]any {
		t.Helper()
		c.send(t, frame)
		return c.nextOf(t, "history")
	}
	h := history(alice, `{"type":"history","to":{"room":"lobby"},"limit":3}`)
	msgs := h["messages"].([]any)
	if got := texts(msgs); fmt.Sprint(got) != "[lobby 3 lobby 4 lobby 5]" || h["more"] != true {
		t.Fatalf("latest lobby page = %v more=%v", got, h["more"])
	}
	first := seq(msgs[0].(map[string]any))
	h = history(alice, fmt.Sprintf(`{"type":"history","to":{"room":"lobby"},"before":%d,"limit":3}`, first))
	if got := texts(h["messages"].([]any)); fmt.Sprint(got) != "[lobby 1 lobby 2]" || h["more"] != false {
		t.Fatalf("older lobby page = %v more=%v", got, h["more"])
	}
	// Alice's conversation with bob, from either side; carol's dm to bob is not in it.
	for _, tc := range []struct {
		c  *wsClient
		to string
	}{{alice, toBob}, {bob, toAlice}} {
		h = history(tc.c, `{"type":"history","to":`+tc.to+`}`)
		if got := texts(h["messages"].([]any)); fmt.Sprint(got) != "[a->b 1 b->a 1 a->b 2]" || h["more"] != false {
			t.Fatalf("dm history = %v", got)
		}
	}
	// Carol asking for "alice" gets her own conversation with alice: empty.
	h = history(carol, `{"type":"history","to":{"user":"alice"}}`)
	if msgs := h["messages"].([]any); len(msgs) != 0 {
		t.Fatalf("carol sees alice's messages: %v", texts(msgs))
	}
	for frame, code := range map[string]string{
		`{"type":"history","to":{"room":"lobby"},"limit":101}`: chat.CodeBadLimit,
		`{"type":"history","to":{"room":"lobby"},"limit":-1}`:  chat.CodeBadLimit,
		`{"type":"history","to":{"room":"attic"}}`:             chat.CodeUnknownRoom,
		`{"type":"history"}`:                                   chat.CodeMissingField,
		`{"type":"history","to":{"user":"a b"}}`:               chat.CodeBadID,
	} {
		alice.send(t, frame)
		if f := alice.nextOf(t, "error"); f["code"] != code {
			t.Fatalf("%s: %v, want %s", frame, f, code)
		}
	}
}

func TestResumeReplaysExactlyWhatWasMissed(t *testing.T) {
	e := startChat(t, 2, nil)
	alice, _ := e.dial(t, e.gws[0], "alice")
	carol, _ := e.dial(t, e.gws[0], "carol")
	bob, _ := e.dial(t, e.gws[1], "bob")
	bob.send(t, `{"type":"history","to":{"room":"lobby"}}`) // any first frame: go live now
	bob.nextOf(t, "history")
	sendOK(t, alice, "m1", `{"room":"lobby"}`, "m1")
	lastSeen := seq(bob.nextOf(t, "message"))

	// Bob drops; meanwhile: lobby, a dm to him, a dm he must not see.
	_ = bob.conn.Close()
	want := map[string]bool{}
	for _, m := range []struct {
		c      *wsClient
		id, to string
		forBob bool
	}{
		{alice, "m2", `{"room":"lobby"}`, true},
		{alice, "d1", `{"user":"bob"}`, true},
		{carol, "x1", `{"user":"alice"}`, false},
		{carol, "m3", `{"room":"lobby"}`, true},
	} {
		sendOK(t, m.c, m.id, m.to, m.id)
		if m.forBob {
			want[m.id] = true
		}
	}
	// Alice keeps sending while bob reconnects and resumes.
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 20 {
			id := fmt.Sprintf("live%d", i)
			alice.send(t, fmt.Sprintf(`{"type":"send","id":%q,"to":{"room":"lobby"},"text":%q}`, id, id))
		}
	})
	for i := range 20 {
		want[fmt.Sprintf("live%d", i)] = true
	}
	h := http.Header{"Cookie": {chat.TokenCookie + "=" + e.token(t, "bob", time.Hour)}}
	bob2 := dialWith(t, wsURL(e.gws[1]), h)
	bob2.send(t, fmt.Sprintf(`{"type":"resume","after":%d}`, lastSeen))
	if f := bob2.next(t); f["type"] != "hello" {
		t.Fatalf("first frame %v", f)
	}
	got := map[string]int{}
	var frames []string
	defer func() {
		if t.Failed() {
			t.Logf("bob2 frames:\n%s", strings.Join(frames, "\n"))
		}
	}()
	var prev uint64 = lastSeen
	resumed := false
	for len(got) < len(want) || !resumed {
		f := bob2.next(t)
		frames = append(frames, fmt.Sprint(f["type"], " ", f["id"], " ", f["seq"]))
		switch f["type"] {
		case "resumed":
			if resumed || f["complete"] != true {
				t.Fatalf("resumed frame %v", f)
			}
			// Everything missed came before resumed.
			for _, id := range []string{"m2", "d1", "m3"} {
				if got[id] != 1 {
					t.Fatalf("resumed before %s was replayed (got %v)", id, got)
				}
			}
			resumed = true
		case "message":
			id := f["id"].(string)
			if !want[id] {
				t.Fatalf("bob got %s, not his to see", id)
			}
			got[id]++
			if got[id] > 1 {
				t.Fatalf("%s delivered twice", id)
			}
			if s := seq(f); s <= prev {
				t.Fatalf("%s seq %d after %d: out of order", id, s, prev)
			} else {
				prev = s
			}
		default:
			t.Fatalf("unexpected frame %v", f)
		}
	}
	wg.Wait()
	for _, id := range []string{"m2", "d1", "m3"} {
		if got[id] != 1 {
			t.Fatalf("missed %s while away: got %v", id, got)
		}
	}
}

func TestResumeMustComeFirst(t *testing.T) {
	e := startChat(t, 1, nil)
	alice, _ := e.dial(t, e.gws[0], "alice")
	sendOK(t, alice, "m1", `{"room":"lobby"}`, "hi")
	alice.send(t, `{"type":"resume","after":0}`)
	if f := alice.nextOf(t, "error"); f["code"] != chat.CodeResumeLate {
		t.Fatalf("late resume: %v", f)
	}
}

func TestResumeSaysIncompleteWhenRetentionDropped(t *testing.T) {
	e := startChat(t, 1, map[string]string{"CHAT_RETENTION": "1s", "CHAT_DEDUPE_WINDOW": "1s"})
	alice, _ := e.dial(t, e.gws[0], "alice")
	first := sendOK(t, alice, "old1", `{"room":"lobby"}`, "old")
	sendOK(t, alice, "old2", `{"room":"lobby"}`, "old")
	js := natstest.JetStream(t, e.ns.URL())
	poll.Until(t, 30*time.Second, func() error {
		s, err := js.Stream(context.Background(), chat.StreamName)
		if err != nil {
			return err
		}
		if n := s.CachedInfo().State.Msgs; n != 0 {
			return fmt.Errorf("%d messages not yet expired", n)
		}
		return nil
	})
	sendOK(t, alice, "new", `{"room":"lobby"}`, "new")
	h := http.Header{"Cookie": {chat.TokenCookie + "=" + e.token(t, "bob", time.Hour)}}
	bob := dialWith(t, wsURL(e.gws[0]), h)
	bob.send(t, fmt.Sprintf(`{"type":"resume","after":%d}`, first))
	m := bob.nextOf(t, "message")
	r := bob.nextOf(t, "resumed")
	if m["id"] != "new" || r["complete"] != false || seq(r) != seq(m) {
		t.Fatalf("replay after a gap past retention: %v then %v", m, r)
	}
}

func TestGatewayRestartLosesNothingForResumingClient(t *testing.T) {
	e := startChat(t, 2, nil)
	alice, _ := e.dial(t, e.gws[0], "alice")
	bob, _ := e.dial(t, e.gws[1], "bob")
	sendOK(t, alice, "before", `{"room":"lobby"}`, "before")
	lastSeen := seq(bob.nextOf(t, "message"))

	// Bob's gateway goes away: his socket is told (1001), the rest goes on.
	if err := e.gws[1].Stop(); err != nil {
		t.Fatal(err)
	}
	if code := bob.closed(t); code != websocket.CloseGoingAway {
		t.Fatalf("socket of a stopping gateway closed with %d, want 1001", code)
	}
	sendOK(t, alice, "gone1", `{"room":"lobby"}`, "gone1")
	sendOK(t, alice, "gone2", `{"user":"bob"}`, "gone2")

	// Bob reconnects to the other gateway and resumes.
	h := http.Header{"Cookie": {chat.TokenCookie + "=" + e.token(t, "bob", time.Hour)}}
	bob2 := dialWith(t, wsURL(e.gws[0]), h)
	bob2.send(t, fmt.Sprintf(`{"type":"resume","after":%d}`, lastSeen))
	bob2.nextOf(t, "hello")
	for _, id := range []string{"gone1", "gone2"} {
		if m := nextNotSeen(t, bob2); m["type"] != "message" || m["id"] != id {
			t.Fatalf("replay: %v, want %s", m, id)
		}
	}
	if r := nextNotSeen(t, bob2); r["type"] != "resumed" || r["complete"] != true {
		t.Fatalf("after the replay: %v", r)
	}
}

// nextNotSeen is c's next frame that is not a read receipt. Alice's send
// moves her read cursor and tells Bob ("seen") live, so the receipt may
// reach his new socket in the middle of the replay: it carries its seq
// and the page applies it in any order.
func nextNotSeen(t *testing.T, c *wsClient) map[string]any {
	t.Helper()
	for {
		if f := c.next(t); f["type"] != chat.FrameSeen {
			return f
		}
	}
}

func TestAuthDownKeepsChatting(t *testing.T) {
	e := startChat(t, 1, nil)
	alice, _ := e.dial(t, e.gws[0], "alice")
	sendOK(t, alice, "d0", `{"user":"bob"}`, "bob is known now")
	// Auth goes away: its endpoints no longer answer.
	e.nc.Close()
	sendOK(t, alice, "l1", `{"room":"lobby"}`, "still here")
	sendOK(t, alice, "d1", `{"user":"bob"}`, "known recipient")
	// A new socket with a valid token still connects (keys are cached).
	bob, _ := e.dial(t, e.gws[0], "bob")
	sendOK(t, bob, "l2", `{"room":"lobby"}`, "new socket works")
	// An unknown recipient cannot be checked: a clear, retryable error.
	bob.send(t, `{"type":"send","id":"d2","to":{"user":"carol"},"text":"x"}`)
	if f := bob.nextOf(t, "error"); f["code"] != chat.CodeUnavailable {
		t.Fatalf("dm to an unchecked user with auth down: %v", f)
	}
}
