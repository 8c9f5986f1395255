package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/poll"
	"github.com/natter/natter/services/servicetest"
)

// seedBig stores n messages of 4,000 '<' from alice in the lobby, about
// 4 KB each.
func seedBig(t *testing.T, alice *wsClient, n int) {
	t.Helper()
	for i := range n {
		sendOK(t, alice, fmt.Sprintf("big%d", i), `{"room":"lobby"}`, strings.Repeat("<", 4000))
	}
}

// A history page stops at HISTORY_MAX_BYTES (more: true), and walking the
// pages back still gives every message once, in order.
func TestHistoryPageCutAtItsByteLimit(t *testing.T) {
	const maxBytes = 12 << 10 // three of seedBig's messages
	e := startChat(t, 1, map[string]string{"USER_SENDS_PER_MINUTE": "1000000", "USER_BYTES_PER_HOUR": "1000000000", "HISTORY_MAX_BYTES": fmt.Sprint(maxBytes), "SEND_RATE": "1000", "SEND_BURST": "1000"})
	alice, _ := e.dial(t, e.gws[0], "alice")
	seedBig(t, alice, 12)
	bob, _ := e.dial(t, e.gws[0], "bob")
	var seen []float64
	before := 0.0
	for page := 0; ; page++ {
		bob.send(t, fmt.Sprintf(`{"type":"history","id":"h%d","to":{"room":"lobby"},"before":%d,"limit":50}`, page, int(before)))
		h := bob.nextOf(t, "history")
		msgs := h["messages"].([]any)
		size := 0
		for _, m := range msgs {
			size += len(chat.Encode(m))
		}
		if len(msgs) == 0 || (len(msgs) > 1 && size > maxBytes) {
			t.Fatalf("page %d: %d messages, %d bytes (limit %d)", page, len(msgs), size, maxBytes)
		}
		if more := h["more"] == true; more != (len(seen)+len(msgs) < 12) {
			t.Fatalf("page %d: more = %v with %d of 12 seen", page, more, len(seen)+len(msgs))
		}
		var seqs []float64
		for _, m := range msgs {
			seqs = append(seqs, m.(map[string]any)["seq"].(float64))
		}
		seen = append(seqs, seen...)
		if h["more"] != true {
			break
		}
		before = seqs[0]
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("pages gave seqs %v: not each once, in order", seen)
		}
	}
	if len(seen) != 12 {
		t.Fatalf("pages gave %d of 12 messages", len(seen))
	}
}

// A history request costs HISTORY_COST of the send rate: past it, it is
// refused with rate_limited and its id.
func TestHistoryCostsMoreOfTheRate(t *testing.T) {
	// A token every 10 s: none comes back during the test.
	e := startChat(t, 1, map[string]string{"SEND_RATE": "0.1", "SEND_BURST": "12", "HISTORY_COST": "5"})
	bob, _ := e.dial(t, e.gws[0], "bob")
	// Each request takes one token when read and four more: 12, 7, 2;
	// the third finds one after its read, short of four.
	bob.send(t, `{"type":"history","id":"h1","to":{"room":"lobby"}}`)
	bob.nextOf(t, "history")
	bob.send(t, `{"type":"history","id":"h2","to":{"room":"lobby"}}`)
	bob.nextOf(t, "history")
	bob.send(t, `{"type":"history","id":"h3","to":{"room":"lobby"}}`)
	if f := bob.nextOf(t, "error"); f["code"] != chat.CodeRateLimited || f["id"] != "h3" {
		t.Fatalf("third history request: %v, want rate_limited for h3", f)
	}
}

// The abuse of finding 1: one account asks, on three sockets, for 40
// pages of 24 KB messages each and reads nothing. Each socket is closed
// as too slow once its queued bytes pass SEND_QUEUE_BYTES, instead of the
// gateway holding 40 answers per socket; another user's chat goes on.
func TestUnreadHistoryClosedAtItsByteBudget(t *testing.T) {
	e := startChat(t, 1, map[string]string{"USER_SENDS_PER_MINUTE": "1000000", "USER_BYTES_PER_HOUR": "1000000000", "SEND_RATE": "1000", "SEND_BURST": "1000", "HISTORY_COST": "1", "SEND_QUEUE_BYTES": "1048576"})
	alice, _ := e.dial(t, e.gws[0], "alice")
	seedBig(t, alice, 60)
	bob, _ := e.dial(t, e.gws[0], "bob")

	var attackers []*websocket.Conn
	for range 3 {
		h := http.Header{"Cookie": {chat.TokenCookie + "=" + e.token(t, "carol", time.Hour)}}
		c, _, err := websocket.DefaultDialer.Dial(wsURL(e.gws[0]), h)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		attackers = append(attackers, c)
		for i := range 200 {
			// Writes may fail once the gateway has closed the socket.
			if c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"history","id":"a%d","to":{"room":"lobby"},"limit":50}`, i)) != nil {
				break
			}
		}
	}
	// Meanwhile bob and alice talk as usual.
	// (Seeded messages still on their way to the gateway when bob joined
	// may reach him first.)
	sendOK(t, alice, "during", `{"room":"lobby"}`, "still here")
	for m := bob.nextOf(t, "message"); m["text"] != "still here"; m = bob.nextOf(t, "message") {
		if m["id"] == "during" {
			t.Fatalf("bob got %v", m)
		}
	}
	// Each attacking socket is closed as too slow: the gateway counts it,
	// and the socket ends after whatever the kernel's buffers held (its
	// close frame waits behind them, so the connection may be cut first).
	poll.Until(t, 30*time.Second, func() error {
		if n := metric(t, e.gws[0], "gateway_slow_closes_total"); n < 3 {
			return fmt.Errorf("%v sockets closed as too slow, want 3", n)
		}
		return nil
	})
	for i, c := range attackers {
		_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
		for {
			_, _, err := c.ReadMessage()
			if err == nil {
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("attacking socket %d still open after 60 s", i)
			}
			break
		}
	}
}

// metric reads one counter or gauge from gw's /metrics.
func metric(t *testing.T, gw *servicetest.Service, name string) float64 {
	t.Helper()
	_, body := gw.Get(t, "/metrics")
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

// A user's sockets past SOCKETS_PER_USER are refused before the upgrade,
// with 429 and a JSON body; other users are not; closing one frees a slot.
func TestSocketsPerUserLimit(t *testing.T) {
	e := startChat(t, 1, map[string]string{"SOCKETS_PER_USER": "2"})
	first, _ := e.dial(t, e.gws[0], "alice")
	e.dial(t, e.gws[0], "alice")
	h := http.Header{"Cookie": {chat.TokenCookie + "=" + e.token(t, "alice", time.Hour)}}
	_, resp, err := websocket.DefaultDialer.Dial(wsURL(e.gws[0]), h)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third socket: %v (%v), want 429", err, resp)
	}
	var body struct{ Error struct{ Code string } }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error.Code != "too_many_sockets" {
		t.Fatalf("third socket's refusal: %+v (%v), want code too_many_sockets", body, err)
	}
	e.dial(t, e.gws[0], "bob")
	_ = first.conn.Close()
	poll.Until(t, 10*time.Second, func() error {
		c, resp, err := websocket.DefaultDialer.Dial(wsURL(e.gws[0]), h)
		if err != nil {
			return fmt.Errorf("after closing one: %v (%v)", err, resp)
		}
		return c.Close()
	})
}

// sendResult sends one message and says how the gateway answered it: an
// ack, or the error frame's code.
func sendResult(t *testing.T, c *wsClient, id, text string) string {
	t.Helper()
	c.send(t, fmt.Sprintf(`{"type":"send","id":%q,"to":{"room":"lobby"},"text":%q}`, id, text))
	for {
		f := c.next(t)
		switch {
		case f["type"] == "ack" && f["id"] == id:
			return "ack"
		case f["type"] == "error" && f["id"] == id:
			return f["code"].(string)
		}
	}
}

// withinWindow runs body until one run starts and ends in the same
// window of length w (a quota's count starts afresh at its edge), at most
// three times; each run gets its own attempt number for fresh users.
func withinWindow(t *testing.T, w time.Duration, body func(try int)) {
	t.Helper()
	for try := range 3 {
		start := time.Now().Truncate(w)
		body(try)
		if time.Now().Truncate(w).Equal(start) {
			return
		}
		t.Logf("run %d crossed a %v window edge; again", try, w)
	}
	t.Fatal("three runs each crossed a window edge")
}

// A user's sends per minute hold across sockets and gateways: spreading
// them buys nothing; other users send on.
func TestUserSendQuotaAcrossGateways(t *testing.T) {
	e := startChat(t, 2, map[string]string{"USER_SENDS_PER_MINUTE": "10", "SEND_RATE": "1000", "SEND_BURST": "1000"})
	withinWindow(t, time.Minute, func(try int) {
		user := fmt.Sprintf("alice%d", try)
		a1, _ := e.dial(t, e.gws[0], user)
		a2, _ := e.dial(t, e.gws[1], user)
		a3, _ := e.dial(t, e.gws[1], user)
		got := map[string]int{}
		for i := range 15 {
			got[sendResult(t, []*wsClient{a1, a2, a3}[i%3], fmt.Sprintf("m%d", i), "hi")]++
		}
		if got["ack"] != 10 || got["quota_exceeded"] != 5 {
			t.Fatalf("15 sends over 3 sockets on 2 gateways with a quota of 10: %v", got)
		}
		bob, _ := e.dial(t, e.gws[1], fmt.Sprintf("bob%d", try))
		if r := sendResult(t, bob, "b1", "still here"); r != "ack" {
			t.Fatalf("another user's send: %s", r)
		}
	})
}

// A user who fills their hourly stored bytes is refused from then on, on
// every gateway, while everyone else stores on: one account cannot fill
// the stream.
func TestUserByteQuotaStopsOnlyThatUser(t *testing.T) {
	e := startChat(t, 2, map[string]string{"USER_BYTES_PER_HOUR": "20000", "MAX_TEXT_CHARS": "1000", "SEND_RATE": "1000", "SEND_BURST": "1000"})
	withinWindow(t, time.Hour, func(try int) {
		user := fmt.Sprintf("mallory%d", try)
		m1, _ := e.dial(t, e.gws[0], user)
		m2, _ := e.dial(t, e.gws[1], user)
		text := strings.Repeat("x", 1000)
		acked, refused := 0, 0
		for i := range 40 {
			switch r := sendResult(t, []*wsClient{m1, m2}[i%2], fmt.Sprintf("m%d", i), text); r {
			case "ack":
				acked++
			case "quota_exceeded":
				refused++
			default:
				t.Fatalf("send %d: %s", i, r)
			}
		}
		// Each stored message is over 1,000 bytes: 20,000 hold at most 19.
		// A gateway may keep part of a lease it could not use, so a few
		// less may be stored, never more.
		if acked < 10 || acked > 19 || refused != 40-acked {
			t.Fatalf("%d messages of 1 KB stored, %d refused, under a quota of 20,000 bytes", acked, refused)
		}
		for i, c := range []*wsClient{m1, m2} {
			if r := sendResult(t, c, fmt.Sprintf("late%d", i), text); r != "quota_exceeded" {
				t.Fatalf("after the quota, gateway %d answered %s", i, r)
			}
		}
		bob, _ := e.dial(t, e.gws[0], fmt.Sprintf("bob%d", try))
		if r := sendResult(t, bob, "b1", text); r != "ack" {
			t.Fatalf("another user's send: %s", r)
		}
	})
}
