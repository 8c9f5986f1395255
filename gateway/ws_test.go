package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/gateway/bridge"
	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/poll"
	"github.com/natter/natter/services/servicetest"
	"github.com/natter/natter/services/token"
)

// chatEnv is real NATS, two gateways started through run, and auth's two
// NATS endpoints answered from a test key and user table (auth itself is
// another module; services/e2e runs the real one).
type chatEnv struct {
	ns    *natstest.Server
	nc    *nats.Conn
	key   token.Key
	gws   []*servicetest.Service
	users map[string]string // id -> name
}

func startChat(t *testing.T, gateways int, env map[string]string) *chatEnv {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e := &chatEnv{ns: natstest.Start(t), key: token.NewKey(priv), users: map[string]string{
		"alice": "Alice", "bob": "Bob", "carol": "Carol",
	}}
	e.nc = natstest.Connect(t, e.ns.URL())
	serveKeys(t, e.nc, e.key)
	if _, err := e.nc.Subscribe(chat.AuthUsersGetSubject, func(m *nats.Msg) {
		var req chat.UsersGetRequest
		_ = json.Unmarshal(m.Data, &req)
		resp := chat.UsersGetResponse{Users: []chat.User{}}
		for _, id := range req.IDs {
			if name, ok := e.users[id]; ok {
				resp.Users = append(resp.Users, chat.User{ID: id, Name: name})
			}
		}
		b, _ := json.Marshal(resp)
		_ = m.Respond(b)
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for range gateways {
		full := map[string]string{"NATS_URL": e.ns.URL(), "HTTP_ADDR": "127.0.0.1:0"}
		for k, v := range env {
			full[k] = v
		}
		gw := servicetest.Start(t, "gateway", run, full)
		gw.WaitReady(t)
		e.gws = append(e.gws, gw)
	}
	return e
}

// serveKeys answers auth.keys with key's public half, as auth does.
func serveKeys(t *testing.T, nc *nats.Conn, key token.Key) {
	t.Helper()
	keys, _ := json.Marshal(token.JWKS{Keys: []token.JWK{key.PublicJWK()}})
	if _, err := nc.Subscribe(chat.AuthKeysSubject, func(m *nats.Msg) { _ = m.Respond(keys) }); err != nil {
		t.Fatal(err)
	}
}

func (e *chatEnv) token(t *testing.T, user string, lifetime time.Duration) string {
	t.Helper()
	// The handle is the user id here: "alice" is @alice.
	s, _, err := e.key.IssueAccount(user, user, e.users[user], time.Now(), lifetime)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// wsClient is a test socket that splits server frames into objects.
type wsClient struct {
	t     *testing.T
	conn  *websocket.Conn
	in    chan map[string]any
	pres  chan map[string]any // presence frames, apart: they interleave with everything
	convs chan map[string]any // conversations frames, apart: a socket's first comes when ready
	err   chan error          // the read error that ended the socket
	held  []map[string]any    // frames read while looking for another type
}

func wsURL(gw *servicetest.Service) string { return "ws" + strings.TrimPrefix(gw.URL, "http") + "/ws" }

// dial opens a socket as user on gw and returns it after its hello.
func (e *chatEnv) dial(t *testing.T, gw *servicetest.Service, user string) (*wsClient, map[string]any) {
	t.Helper()
	h := http.Header{"Cookie": {chat.TokenCookie + "=" + e.token(t, user, time.Hour)}}
	c := dialWith(t, wsURL(gw), h)
	hello := c.next(t)
	if hello["type"] != "hello" {
		t.Fatalf("first frame = %v, want hello", hello)
	}
	return c, hello
}

func dialWith(t *testing.T, url string, h http.Header) *wsClient {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(url, h)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	c := &wsClient{t: t, conn: conn, in: make(chan map[string]any, 1024), pres: make(chan map[string]any, 1024), convs: make(chan map[string]any, 64), err: make(chan error, 1)}
	go func() {
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				c.err <- err
				close(c.in)
				return
			}
			for _, line := range strings.Split(string(data), "\n") {
				var obj map[string]any
				if err := json.Unmarshal([]byte(line), &obj); err != nil {
					c.err <- fmt.Errorf("server sent a non-JSON line %q", line)
					close(c.in)
					return
				}
				switch obj["type"] {
				case "presence":
					c.pres <- obj
					continue
				case "conversations":
					c.convs <- obj
					continue
				}
				c.in <- obj
			}
		}
	}()
	t.Cleanup(func() { _ = conn.Close() })
	return c
}

// nextConversations is the next conversations frame.
func (c *wsClient) nextConversations(t *testing.T) map[string]any {
	t.Helper()
	select {
	case f := <-c.convs:
		return f
	case <-time.After(20 * time.Second):
		t.Fatal("no conversations frame within 20s")
	}
	return nil
}

// nextPresence is the next presence frame.
func (c *wsClient) nextPresence(t *testing.T) map[string]any {
	t.Helper()
	select {
	case f := <-c.pres:
		return f
	case <-time.After(20 * time.Second):
		t.Fatal("no presence frame within 20s")
	}
	return nil
}

func (c *wsClient) send(t *testing.T, frame string) {
	t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatal(err)
	}
}

func (c *wsClient) next(t *testing.T) map[string]any {
	t.Helper()
	select {
	case obj, ok := <-c.in:
		if !ok {
			t.Fatalf("socket closed: %v", <-c.err)
		}
		return obj
	case <-time.After(10 * time.Second):
		t.Fatal("no frame within 10s")
	}
	return nil
}

// nextOf returns the next frame of type typ. Frames of other types are
// kept for later calls: a sender may see its message before its ack.
func (c *wsClient) nextOf(t *testing.T, typ string) map[string]any {
	t.Helper()
	for i, f := range c.held {
		if f["type"] == typ {
			c.held = append(c.held[:i], c.held[i+1:]...)
			return f
		}
	}
	for {
		f := c.next(t)
		if f["type"] == typ {
			return f
		}
		c.held = append(c.held, f)
	}
}

// closed waits for the server to close the socket and returns the code.
func (c *wsClient) closed(t *testing.T) int {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-c.in:
			if ok {
				continue
			}
			var ce *websocket.CloseError
			if err := <-c.err; errors.As(err, &ce) {
				return ce.Code
			} else {
				t.Fatalf("socket ended without a close frame: %v", err)
			}
		case <-deadline:
			t.Fatal("socket not closed within 10s")
		}
	}
}

func seq(f map[string]any) uint64 { n, _ := f["seq"].(float64); return uint64(n) }

func TestRoomBroadcastAcrossGateways(t *testing.T) {
	e := startChat(t, 2, nil)
	alice, hello := e.dial(t, e.gws[0], "alice")
	if u := hello["user"].(map[string]any); u["id"] != "alice" || u["name"] != "Alice" || u["account"] != "alice" {
		t.Fatalf("hello user = %v", u)
	}
	bob, _ := e.dial(t, e.gws[1], "bob")
	carol, _ := e.dial(t, e.gws[1], "carol")

	// "from" in the frame is ignored: the token decides.
	alice.send(t, `{"type":"send","id":"m1","to":{"room":"lobby"},"text":"hello <b>all</b>","from":{"id":"bob","name":"Bob"}}`)
	ack := alice.nextOf(t, "ack")
	if ack["id"] != "m1" || seq(ack) == 0 {
		t.Fatalf("ack = %v", ack)
	}
	for name, c := range map[string]*wsClient{"alice": alice, "bob": bob, "carol": carol} {
		m := c.nextOf(t, "message")
		from := m["from"].(map[string]any)
		if seq(m) != seq(ack) || m["text"] != "hello <b>all</b>" || from["id"] != "alice" || from["name"] != "Alice" || from["account"] != "alice" ||
			m["to"].(map[string]any)["room"] != "lobby" || m["id"] != "m1" {
			t.Fatalf("%s got %v", name, m)
		}
		if _, err := time.Parse(time.RFC3339, m["ts"].(string)); err != nil {
			t.Fatalf("%s: ts %v", name, m["ts"])
		}
	}
}

func TestDirectMessagesReachOnlyTheirUsers(t *testing.T) {
	e := startChat(t, 2, nil)
	alice1, _ := e.dial(t, e.gws[0], "alice")
	alice2, _ := e.dial(t, e.gws[1], "alice")
	bob, _ := e.dial(t, e.gws[1], "bob")
	carol, _ := e.dial(t, e.gws[0], "carol")

	alice1.send(t, `{"type":"send","id":"d1","to":{"user":"bob"},"text":"psst"}`)
	ack := alice1.nextOf(t, "ack")
	for name, c := range map[string]*wsClient{"alice1": alice1, "alice2": alice2, "bob": bob} {
		m := c.nextOf(t, "message")
		if seq(m) != seq(ack) || m["text"] != "psst" || m["to"].(map[string]any)["user"] != "bob" {
			t.Fatalf("%s got %v", name, m)
		}
	}
	// Carol's next message is the lobby one sent after: she never saw the dm.
	bob.send(t, `{"type":"send","id":"r1","to":{"room":"lobby"},"text":"after"}`)
	if m := carol.nextOf(t, "message"); m["text"] != "after" {
		t.Fatalf("carol got %v", m)
	}
	// A note to self is delivered once per socket.
	alice1.send(t, `{"type":"send","id":"self","to":{"user":"alice"},"text":"note"}`)
	for _, c := range []*wsClient{alice1, alice2} {
		for {
			m := c.nextOf(t, "message")
			if m["text"] == "note" {
				break
			}
		}
	}
	alice1.send(t, `{"type":"send","id":"r2","to":{"room":"lobby"},"text":"marker"}`)
	if m := alice2.nextOf(t, "message"); m["text"] != "marker" {
		t.Fatalf("note to self delivered twice: then %v", m)
	}
}

// A client may send without waiting for each ack: its sends are stored in
// the order sent, and acked in that order, past the in-flight bound too.
// Also with WRITE_DELAY: a busy socket's writes are held back and merged,
// nothing lost or reordered.
func TestPipelinedSendsKeepOrder(t *testing.T) {
	for _, delay := range []string{"0", "20ms"} {
		t.Run("WRITE_DELAY="+delay, func(t *testing.T) {
			e := startChat(t, 1, map[string]string{"USER_SENDS_PER_MINUTE": "1000000", "USER_BYTES_PER_HOUR": "1000000000", "SEND_RATE": "1000", "SEND_BURST": "1000", "WRITE_DELAY": delay})
			alice, _ := e.dial(t, e.gws[0], "alice")
			bob, _ := e.dial(t, e.gws[0], "bob")
			const n = 3 * bridge.MaxSendsInFlight
			for i := range n {
				alice.send(t, fmt.Sprintf(`{"type":"send","id":"p%d","to":{"room":"lobby"},"text":"n%d"}`, i, i))
			}
			var last uint64
			for i := range n {
				ack := alice.nextOf(t, "ack")
				if ack["id"] != fmt.Sprintf("p%d", i) || seq(ack) <= last {
					t.Fatalf("ack %d = %v after seq %d", i, ack, last)
				}
				last = seq(ack)
				if m := bob.nextOf(t, "message"); m["text"] != fmt.Sprintf("n%d", i) || seq(m) != last {
					t.Fatalf("bob's message %d = %v, want seq %d", i, m, last)
				}
			}
		})
	}
}

func TestRetryStoredOnce(t *testing.T) {
	e := startChat(t, 1, nil)
	alice, _ := e.dial(t, e.gws[0], "alice")
	bob, _ := e.dial(t, e.gws[0], "bob")
	alice.send(t, `{"type":"send","id":"same","to":{"room":"lobby"},"text":"once"}`)
	first := alice.nextOf(t, "ack")
	alice.send(t, `{"type":"send","id":"same","to":{"room":"lobby"},"text":"once"}`)
	second := alice.nextOf(t, "ack")
	if seq(first) != seq(second) {
		t.Fatalf("retry acked with seq %d, first with %d", seq(second), seq(first))
	}
	// Bob (another user) may use the same id: it is another message.
	bob.send(t, `{"type":"send","id":"same","to":{"room":"lobby"},"text":"mine"}`)
	if b := bob.nextOf(t, "ack"); seq(b) == seq(first) {
		t.Fatal("another user's message with the same id was deduplicated")
	}
	info, err := natstest.JetStream(t, e.ns.URL()).Stream(context.Background(), chat.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 2 {
		t.Fatalf("stream holds %d messages, want 2", n)
	}
}

// chatStream is a JetStream context on e's server and the chat stream's
// configuration, for tests that change the stream under the gateways.
func (e *chatEnv) chatStream(t *testing.T) (jetstream.JetStream, jetstream.StreamConfig) {
	t.Helper()
	js := natstest.JetStream(t, e.ns.URL())
	s, err := js.Stream(context.Background(), chat.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	return js, s.CachedInfo().Config
}

// A send made while the stream has no leader (here: none at all for a
// second, as during an election after a NATS node failed) is stored and
// acked once the stream is back, not refused: the gateway tries the
// store again for publishTimeout.
func TestSendWaitsOutALeaderlessStream(t *testing.T) {
	e := startChat(t, 1, nil)
	alice, _ := e.dial(t, e.gws[0], "alice")
	bob, _ := e.dial(t, e.gws[0], "bob")
	js, cfg := e.chatStream(t)
	ctx := context.Background()
	if err := js.DeleteStream(ctx, chat.StreamName); err != nil {
		t.Fatal(err)
	}
	back := make(chan error, 1)
	time.AfterFunc(time.Second, func() { // the outage lasts a second
		_, err := js.CreateStream(ctx, cfg)
		back <- err
	})
	alice.send(t, `{"type":"send","id":"during","to":{"room":"lobby"},"text":"while electing"}`)
	for f := alice.next(t); f["type"] != "ack"; f = alice.next(t) {
		if f["type"] == "error" {
			t.Fatalf("send during a one-second outage answered %v, want an ack", f)
		}
	}
	if err := <-back; err != nil {
		t.Fatal(err)
	}
	if m := bob.nextOf(t, "message"); m["text"] != "while electing" {
		t.Fatalf("bob got %v", m)
	}
}

// A message the stream stored but did not republish (as when its leader
// fails between its replicas storing it and applying it itself; here the
// republish is turned off for it) reaches the recipients' sockets all
// the same, before the next message of its conversation: the next one
// names it as the previous seq on the subject, and the gateway reads it
// from the stream. In the lobby and in a direct conversation, for
// recipients on the sender's gateway and on another.
func TestUnrepublishedMessageDelivered(t *testing.T) {
	e := startChat(t, 2, nil)
	alice, _ := e.dial(t, e.gws[0], "alice")
	bob, _ := e.dial(t, e.gws[1], "bob")
	carol, _ := e.dial(t, e.gws[0], "carol")
	js, cfg := e.chatStream(t)
	ctx := context.Background()
	republish := func(on bool) {
		c := cfg
		if !on {
			c.RePublish = nil
		}
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	for round, to := range []string{`{"room":"lobby"}`, `{"user":"bob"}`} {
		send := func(n int, text string) {
			alice.send(t, fmt.Sprintf(`{"type":"send","id":"r%d-%d","to":%s,"text":%q}`, round, n, to, text))
			alice.nextOf(t, "ack")
		}
		send(1, "before")
		republish(false)
		send(2, "not republished")
		republish(true)
		send(3, "after")
		recipients := map[string]*wsClient{"bob": bob}
		if to == `{"room":"lobby"}` {
			recipients["carol"] = carol
		}
		for name, c := range recipients {
			var got []string
			for len(got) < 3 {
				got = append(got, c.nextOf(t, "message")["text"].(string))
			}
			if strings.Join(got, "|") != "before|not republished|after" {
				t.Fatalf("alice to %s: %s got %q, want before, not republished, after", to, name, got)
			}
		}
	}
}

func TestHandshakeRefusals(t *testing.T) {
	e := startChat(t, 1, nil)
	gw := e.gws[0]
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	forged, _, _ := token.NewKey(other).Issue("alice", "Alice", time.Now(), time.Hour)
	revokedTok, revokedClaims, _ := e.key.Issue("alice", "Alice", time.Now(), time.Hour)
	kv, err := chat.EnsureRevokedBucket(context.Background(), natstest.JetStream(t, e.ns.URL()), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(context.Background(), revokedClaims.ID, []byte(`{}`), jetstream.KeyTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// The gateway learns revocations from a watch of the bucket: within
	// moments. A socket it admitted meanwhile is closed as revoked.
	revokedHeader := http.Header{"Cookie": {chat.TokenCookie + "=" + revokedTok}}
	poll.Until(t, 5*time.Second, func() error {
		conn, resp, _ := websocket.DefaultDialer.Dial(wsURL(gw), revokedHeader)
		if conn != nil {
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			var err error
			for err == nil {
				_, _, err = conn.ReadMessage()
			}
			_ = conn.Close()
			if !websocket.IsCloseError(err, chat.CloseTokenRevoked) {
				t.Fatalf("a socket admitted with a revoked token ended with %v, want close %d", err, chat.CloseTokenRevoked)
			}
		}
		if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			return errors.New("the revoked token is still admitted")
		}
		return nil
	})
	good := chat.TokenCookie + "=" + e.token(t, "alice", time.Hour)
	tests := []struct {
		name   string
		header http.Header
		status int
	}{
		{"no token", http.Header{}, 401},
		{"forged token", http.Header{"Cookie": {chat.TokenCookie + "=" + forged}}, 401},
		{"revoked token", revokedHeader, 401},
		{"other origin", http.Header{"Cookie": {good}, "Origin": {"http://evil.example"}}, 403},
		{"bearer", http.Header{"Authorization": {"Bearer " + e.token(t, "bob", time.Hour)}}, 101},
		{"same origin", http.Header{"Cookie": {good}, "Origin": {gw.URL}}, 101},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, resp, err := websocket.DefaultDialer.Dial(wsURL(gw), tt.header)
			if conn != nil {
				defer conn.Close()
			}
			if resp == nil {
				t.Fatalf("no HTTP answer: %v", err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
		})
	}
}

func TestErrorFramesKeepSocketOpen(t *testing.T) {
	e := startChat(t, 1, map[string]string{"MAX_TEXT_CHARS": "10"})
	alice, _ := e.dial(t, e.gws[0], "alice")
	tests := []struct{ frame, code, id string }{
		{`not json`, chat.CodeBadFrame, ""},
		{`{"type":"send","id":5}`, chat.CodeBadFrame, ""},
		// A field of the wrong type: the error still names the send.
		{`{"type":"send","id":"w1","to":"lobby","text":"x"}`, chat.CodeBadFrame, "w1"},
		{`{"id":"x"}`, chat.CodeMissingField, "x"},
		{`{"type":"dance"}`, chat.CodeUnknownType, ""},
		{`{"type":"send","to":{"room":"lobby"},"text":"x"}`, chat.CodeMissingField, ""},
		{`{"type":"send","id":"a.b","to":{"room":"lobby"},"text":"x"}`, chat.CodeBadID, "a.b"},
		{`{"type":"send","id":"e1","text":"x"}`, chat.CodeMissingField, "e1"},
		{`{"type":"send","id":"e2","to":{},"text":"x"}`, chat.CodeBadRecipient, "e2"},
		{`{"type":"send","id":"e3","to":{"room":"lobby","user":"bob"},"text":"x"}`, chat.CodeBadRecipient, "e3"},
		{`{"type":"send","id":"e4","to":{"room":"attic"},"text":"x"}`, chat.CodeUnknownRoom, "e4"},
		{`{"type":"send","id":"e5","to":{"user":"mallory"},"text":"x"}`, chat.CodeUnknownRecipient, "e5"},
		{`{"type":"send","id":"e6","to":{"user":"a*b"},"text":"x"}`, chat.CodeBadID, "e6"},
		{`{"type":"send","id":"e7","to":{"room":"lobby"},"text":" \n\t"}`, chat.CodeEmptyText, "e7"},
		{`{"type":"send","id":"e8","to":{"room":"lobby"},"text":"elevenchars"}`, chat.CodeTextTooLong, "e8"},
	}
	for _, tt := range tests {
		alice.send(t, tt.frame)
		f := alice.next(t)
		if f["type"] != "error" || f["code"] != tt.code || f["message"] == "" {
			t.Fatalf("%s: got %v, want error %s", tt.frame, f, tt.code)
		}
		if id, _ := f["id"].(string); id != tt.id {
			t.Errorf("%s: error with id %q, want %q", tt.frame, id, tt.id)
		}
	}
	// Ten characters of Chinese are within a ten-character limit.
	alice.send(t, `{"type":"send","id":"ok","to":{"room":"lobby"},"text":"一二三四五六七八九十"}`)
	if f := alice.nextOf(t, "ack"); f["id"] != "ok" {
		t.Fatalf("after the errors: %v", f)
	}
}

func TestOversizeFrameCloses1009(t *testing.T) {
	e := startChat(t, 1, map[string]string{"MAX_FRAME_BYTES": "4096"})
	alice, _ := e.dial(t, e.gws[0], "alice")
	alice.send(t, `{"type":"send","id":"big","to":{"room":"lobby"},"text":"`+strings.Repeat("x", 5000)+`"}`)
	if code := alice.closed(t); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
}

// A frame the protocol forbids closes that socket with 1002, written by the
// gateway after what was queued (gorilla's own write of it is dropped, so
// it cannot land inside the gateway's frames); other sockets go on.
func TestProtocolErrorCloses1002(t *testing.T) {
	e := startChat(t, 1, nil)
	alice, _ := e.dial(t, e.gws[0], "alice")
	bob, _ := e.dial(t, e.gws[0], "bob")
	// A masked frame with a reserved opcode (3), empty.
	if _, err := alice.conn.NetConn().Write([]byte{0x83, 0x80, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if code := alice.closed(t); code != websocket.CloseProtocolError {
		t.Fatalf("close code %d, want 1002", code)
	}
	bob.send(t, `{"type":"send","id":"b1","to":{"room":"lobby"},"text":"still here"}`)
	bob.nextOf(t, "ack")
}

func TestFloodingIsLimitedThenClosed(t *testing.T) {
	e := startChat(t, 1, map[string]string{"SEND_RATE": "1", "SEND_BURST": "3", "FLOOD_STRIKES": "5"})
	alice, _ := e.dial(t, e.gws[0], "alice")
	// The close (after burst + strikes = 8 frames) may come before the
	// last sends: gorilla then refuses to write after answering it.
	for i := range 10 {
		if err := alice.conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"send","id":"f%d","to":{"room":"lobby"},"text":"x"}`, i)); err != nil {
			if i < 8 {
				t.Fatalf("send %d: %v", i, err)
			}
			break
		}
	}
	limited, last := 0, 2
	for {
		f, ok := <-alice.in
		if !ok {
			break
		}
		if f["code"] == chat.CodeRateLimited {
			// Each refusal names its send, so the client knows what to
			// retry: one past the burst, in order.
			var n int
			if _, err := fmt.Sscanf(fmt.Sprint(f["id"]), "f%d", &n); err != nil || n < 3 || n <= last {
				t.Errorf("refusal %d names %q, want a later send than f%d", limited, f["id"], last)
			}
			last = n
			limited++
		}
	}
	var ce *websocket.CloseError
	if err := <-alice.err; !errors.As(err, &ce) || ce.Code != chat.CloseFlooding {
		t.Fatalf("flooding socket ended with %v, want close %d", err, chat.CloseFlooding)
	}
	if limited == 0 {
		t.Fatal("no rate_limited error before the close")
	}
}

func TestSlowReaderClosedOthersServed(t *testing.T) {
	e := startChat(t, 1, map[string]string{"USER_SENDS_PER_MINUTE": "1000000", "USER_BYTES_PER_HOUR": "1000000000", "SEND_QUEUE": "256", "SEND_RATE": "100000", "SEND_BURST": "100000"})
	dialRaw := func(user string) *websocket.Conn {
		h := http.Header{"Cookie": {chat.TokenCookie + "=" + e.token(t, user, time.Hour)}}
		c, _, err := websocket.DefaultDialer.Dial(wsURL(e.gws[0]), h)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	// The slow socket never reads: its kernel buffers, then its queue fill.
	slow := dialRaw("carol")
	// The fast one reads as fast as it can. Its history request makes it
	// live at once (no wait for a resume); its answer comes before any
	// send, so every message it counts below is a live delivery.
	fast := dialRaw("bob")
	if err := fast.WriteMessage(websocket.TextMessage, []byte(`{"type":"history","to":{"room":"lobby"},"limit":1}`)); err != nil {
		t.Fatal(err)
	}
	readObjectsUntil(t, fast, func(o wireObject) bool { return o.Type == chat.FrameHistory })

	const n = 2000
	fastGot := newIDSet()
	fastAll := make(chan struct{})
	go func() {
		_ = readObjectsUntil(t, fast, func(o wireObject) bool {
			if o.Type == chat.FrameMessage {
				fastGot.add(o.ID)
			}
			return fastGot.len() == n
		})
		close(fastAll)
	}()
	// The sender reads everything it is sent and keeps at most window
	// sends unacked, as a client pacing itself by its acks: its own queue
	// (acks and its own messages) then stays far below SEND_QUEUE however
	// slowly it is scheduled, and only the reader that never reads is
	// slow. A send the stream did not store (unavailable) is sent again
	// with its id, as the page does.
	const window = 64
	alice := dialRaw("alice")
	acked := newIDSet()
	ackedOne := make(chan struct{}, 1)
	retry := make(chan string, n)
	aliceEnd := make(chan error, 1)
	go func() {
		aliceEnd <- readObjectsUntil(t, alice, func(o wireObject) bool {
			switch o.Type {
			case chat.FrameAck:
				acked.add(o.ID)
				select {
				case ackedOne <- struct{}{}:
				default:
				}
			case chat.FrameError:
				if o.Code != chat.CodeUnavailable {
					t.Errorf("send %s refused: %s", o.ID, o.Code)
				}
				retry <- o.ID
			}
			return false
		})
	}()
	send := func(id string) {
		frame := fmt.Sprintf(`{"type":"send","id":"%s","to":{"room":"lobby"},"text":"%s"}`, id, strings.Repeat("y", 4000))
		if err := alice.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			t.Fatalf("sending %s: %v", id, err)
		}
	}
	deadline := time.After(60 * time.Second)
	for sent, all := 0, false; !all; {
		if sent < n && sent-acked.len() < window {
			send(fmt.Sprintf("s%d", sent))
			sent++
			continue
		}
		select {
		case <-fastAll:
			all = true
		case id := <-retry:
			send(id)
		case <-ackedOne:
		case err := <-aliceEnd:
			t.Fatalf("sender's socket ended (%v) with %d of %d acked; fast reader has %d", err, acked.len(), n, fastGot.len())
		case <-deadline:
			t.Fatalf("after 60s the fast reader has %d of %d messages (%d duplicates); %d acked", fastGot.len(), n, fastGot.dups(), acked.len())
		}
	}
	if got := fastGot.len(); got != n {
		t.Fatalf("fast reader's socket ended with %d of %d messages", got, n)
	}
	if d := fastGot.dups(); d > 0 {
		t.Errorf("fast reader got %d messages twice", d)
	}
	// The slow socket was closed as too slow.
	if got := metric(t, e.gws[0], "gateway_slow_closes_total"); got != 1 {
		t.Fatalf("gateway_slow_closes_total = %v, want 1 (the slow socket)", got)
	}
	// Now read it: after what fit, a close 4009 when the close frame fit
	// in what the socket could still take; a socket whose write was stuck
	// (its kernel buffers full) for writeWait is dropped without one
	// (1006), which on a loaded machine can happen before this test reads.
	// Bounded, so a socket never closed fails the test instead of hanging.
	_ = slow.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		_, _, err := slow.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || (ce.Code != chat.CloseTooSlow && ce.Code != websocket.CloseAbnormalClosure) {
			t.Fatalf("slow socket ended with %v, want close %d (or 1006, dropped)", err, chat.CloseTooSlow)
		}
		break
	}
}

// wireObject is what the slow-reader test reads of a server object.
type wireObject struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Code string `json:"code"`
}

// readObjectsUntil reads c's frames, object by object, until done says so
// (nil) or the socket ends (its error).
func readObjectsUntil(t *testing.T, c *websocket.Conn, done func(wireObject) bool) error {
	for {
		_, data, err := c.ReadMessage()
		if err != nil {
			return err
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			var o wireObject
			if err := json.Unmarshal([]byte(line), &o); err != nil {
				t.Errorf("undecodable object %q: %v", line, err)
				continue
			}
			if done(o) {
				return nil
			}
		}
	}
}

// idSet counts distinct ids, and the ones seen more than once, across
// goroutines.
type idSet struct {
	mu   sync.Mutex
	ids  map[string]bool
	dupN int
}

func newIDSet() *idSet { return &idSet{ids: map[string]bool{}} }

func (s *idSet) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids[id] {
		s.dupN++
	}
	s.ids[id] = true
}

func (s *idSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

func (s *idSet) dups() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dupN
}

func TestRevocationAndExpiryClose(t *testing.T) {
	e := startChat(t, 1, nil)
	tok, claims, _ := e.key.Issue("alice", "Alice", time.Now(), time.Hour)
	alice := dialWith(t, wsURL(e.gws[0]), http.Header{"Cookie": {chat.TokenCookie + "=" + tok}})
	alice.nextOf(t, "hello")
	bob, _ := e.dial(t, e.gws[0], "bob")

	rev, _ := json.Marshal(chat.Revocation{TokenID: claims.ID, User: "alice", ExpiresAt: claims.ExpiresAt.Time})
	if err := e.nc.Publish(chat.AuthRevokedSubject, rev); err != nil {
		t.Fatal(err)
	}
	if code := alice.closed(t); code != chat.CloseTokenRevoked {
		t.Fatalf("revoked socket closed with %d, want %d", code, chat.CloseTokenRevoked)
	}
	// Bob's socket, another token, is unaffected.
	bob.send(t, `{"type":"send","id":"b1","to":{"room":"lobby"},"text":"still here"}`)
	bob.nextOf(t, "ack")

	// A revocation stored in the bucket closes the token's sockets even
	// if its auth.revoked message never arrives.
	tok2, claims2, _ := e.key.Issue("dave", "Dave", time.Now(), time.Hour)
	dave := dialWith(t, wsURL(e.gws[0]), http.Header{"Cookie": {chat.TokenCookie + "=" + tok2}})
	dave.nextOf(t, "hello")
	kv, err := chat.EnsureRevokedBucket(context.Background(), natstest.JetStream(t, e.ns.URL()), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(context.Background(), claims2.ID, []byte(`{}`), jetstream.KeyTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if code := dave.closed(t); code != chat.CloseTokenRevoked {
		t.Fatalf("socket of a token revoked in the bucket closed with %d, want %d", code, chat.CloseTokenRevoked)
	}
	bob.send(t, `{"type":"send","id":"b2","to":{"room":"lobby"},"text":"still here"}`)
	bob.nextOf(t, "ack")

	short := e.token(t, "carol", 1500*time.Millisecond)
	carol := dialWith(t, wsURL(e.gws[0]), http.Header{"Cookie": {chat.TokenCookie + "=" + short}})
	carol.nextOf(t, "hello")
	if code := carol.closed(t); code != chat.CloseTokenExpired {
		t.Fatalf("expired socket closed with %d, want %d", code, chat.CloseTokenExpired)
	}
}

// A NATS restart leaves the sockets open: once the gateway is back on
// NATS it catches up from the stream (see TestNATSCutCaughtUpOnOpenSockets)
// and live delivery and sends go on, on the same sockets.
func TestNATSRestartKeepsSockets(t *testing.T) {
	e := startChat(t, 1, nil)
	alice, _ := e.dial(t, e.gws[0], "alice")
	bob, _ := e.dial(t, e.gws[0], "bob")
	e.ns.Restart(t)
	bob.send(t, `{"type":"send","id":"after","to":{"room":"lobby"},"text":"back"}`)
	ack := bob.nextOf(t, "ack")
	if ack["id"] != "after" {
		t.Fatalf("ack = %v", ack)
	}
	if m := alice.nextOf(t, "message"); seq(m) != seq(ack) || m["text"] != "back" {
		t.Fatalf("alice got %v, want the message sent after the restart", m)
	}
	alice.send(t, `{"type":"send","id":"a1","to":{"user":"bob"},"text":"still here"}`)
	if ack := alice.nextOf(t, "ack"); ack["id"] != "a1" {
		t.Fatalf("alice's ack = %v", ack)
	}
}

// Idle sockets are pinged every PING_INTERVAL (their writer starts for the
// ping alone); one that answers stays open, one that does not is dropped
// after two intervals.
func TestPingsKeepAnsweringSocketsOpen(t *testing.T) {
	e := startChat(t, 1, map[string]string{"PING_INTERVAL": "1s"})
	open := func(user string, answer bool) (*websocket.Conn, *atomic.Int32, <-chan error) {
		h := http.Header{"Cookie": {chat.TokenCookie + "=" + e.token(t, user, time.Hour)}}
		c, _, err := websocket.DefaultDialer.Dial(wsURL(e.gws[0]), h)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		var pings atomic.Int32
		c.SetPingHandler(func(data string) error {
			pings.Add(1)
			if !answer {
				return nil
			}
			return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		})
		return c, &pings, readUntilEnd(c)
	}
	_, alivePings, aliveEnded := open("alice", true)
	_, silentPings, silentEnded := open("bob", false)
	select {
	case <-silentEnded:
	case <-time.After(10 * time.Second):
		t.Fatal("a socket that never answered pings was not dropped within 10s")
	}
	if silentPings.Load() == 0 {
		t.Fatal("the dropped socket was never pinged")
	}
	// Three pings answered: open well past two intervals.
	for deadline := time.Now().Add(10 * time.Second); alivePings.Load() < 3; {
		select {
		case err := <-aliveEnded:
			t.Fatalf("the answering socket ended: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the answering socket got %d pings in 10s", alivePings.Load())
		}
	}
}

// A client's ping is answered with its payload, and a client's close is
// echoed with its code: both now go through the socket's queued writes,
// after the frames queued before them.
func TestClientPingAndCloseAnswered(t *testing.T) {
	e := startChat(t, 1, nil)
	h := http.Header{"Cookie": {chat.TokenCookie + "=" + e.token(t, "alice", time.Hour)}}
	c, _, err := websocket.DefaultDialer.Dial(wsURL(e.gws[0]), h)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pongs := make(chan string, 1)
	c.SetPongHandler(func(data string) error {
		pongs <- data
		return nil
	})
	closes := make(chan int, 1)
	c.SetCloseHandler(func(code int, _ string) error {
		closes <- code
		return nil
	})
	ended := readUntilEnd(c)
	if err := c.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-pongs:
		if got != "are you there" {
			t.Fatalf("pong %q, want the ping's payload", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong within 5s")
	}
	if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "bye"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-closes:
		if code != websocket.CloseGoingAway {
			t.Fatalf("close echoed with %d, want %d", code, websocket.CloseGoingAway)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("close not echoed within 5s")
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the gateway did not end the connection after the close")
	}
}

// readUntilEnd reads c (its handlers see the control frames) and reports
// the error that ended it.
func readUntilEnd(c *websocket.Conn) <-chan error {
	ended := make(chan error, 1)
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				ended <- err
				return
			}
		}
	}()
	return ended
}

// A socket's live messages come in stream order whatever their
// conversation: a client resumes after the highest seq it saw, so a room
// message delivered after a later direct message would be lost by a
// reconnect between the two.
func TestLiveDeliveryInStreamOrder(t *testing.T) {
	e := startChat(t, 1, map[string]string{"USER_SENDS_PER_MINUTE": "1000000", "USER_BYTES_PER_HOUR": "1000000000", "SEND_RATE": "1000", "SEND_BURST": "1000"})
	alice, _ := e.dial(t, e.gws[0], "alice")
	bob, _ := e.dial(t, e.gws[0], "bob")
	carol, _ := e.dial(t, e.gws[0], "carol")
	const n = 200 // per sender
	var wg sync.WaitGroup
	for _, s := range []struct {
		c  *wsClient
		to string
	}{{bob, `{"user":"alice"}`}, {carol, `{"room":"lobby"}`}} {
		wg.Go(func() {
			for i := range n {
				if err := s.c.conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"send","id":"o%d","to":%s,"text":"x"}`, i, s.to)); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
		})
	}
	var last uint64
	for i := range 2 * n {
		m := alice.nextOf(t, "message")
		if s := seq(m); s <= last {
			t.Fatalf("message %d: seq %d (%v) after seq %d", i, s, m["to"], last)
		} else {
			last = s
		}
	}
	wg.Wait()
}
