package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chaos"
	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/mongotest"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/poll"
	"github.com/natter/natter/services/servicetest"
)

// connectAs opens a NATS connection as one of the deployment's users.
func connectAs(t *testing.T, url, user, name string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.UserInfo(user, chaos.NATSPassword(user)), nats.Name(name),
		nats.MaxReconnects(-1), nats.ReconnectWait(200 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestClusterDeployment runs natter on a 3-node NATS cluster configured by
// deploy/nats: R3 stream and buckets, two gateways on different nodes,
// two presence replicas, auth; then kills a node while messages flow.
func TestClusterDeployment(t *testing.T) {
	nodes := chaos.StartCluster(t, binDir)
	db := mongotest.Start(t)
	all := nodes[0].URL() + "," + nodes[1].URL() + "," + nodes[2].URL()
	addrs := servicetest.FreeAddrs(t, 5)
	common := []string{"JS_REPLICAS=3", "LOG_FORMAT=json"}
	creds := func(user string) []string {
		return append([]string{"NATS_USER=" + user, "NATS_PASSWORD=" + chaos.NATSPassword(user)}, common...)
	}
	procs := map[string]*service{}
	procs["auth"] = startService(t, "auth", append(creds("auth"), "TRUSTED_PROXIES=127.0.0.1", "NATS_URL="+all, "MONGO_URI="+db.URI(), "HTTP_ADDR="+addrs[0],
		"AUTH_SIGNING_KEY_FILE="+filepath.Join(t.TempDir(), "key.pem"), "AUTH_GENERATE_SIGNING_KEY=true",
		"ARGON2_MEMORY_KIB=4096", "ARGON2_ITERATIONS=1")...)
	// Each replica and gateway starts on its own node; they learn the
	// others from the cluster, as they would from a multi-URL NATS_URL.
	procs["presence-1"] = startService(t, "presence", append(creds("presence"), "NATS_URL="+nodes[1].URL(), "HTTP_ADDR="+addrs[1])...)
	procs["presence-2"] = startService(t, "presence", append(creds("presence"), "NATS_URL="+nodes[2].URL(), "HTTP_ADDR="+addrs[2])...)
	gwA, gwB := "http://"+addrs[3], "http://"+addrs[4]
	// Alice sends faster than a person types: above the default rate.
	gwEnv := append(creds("gateway"), "AUTH_URL=http://"+addrs[0], "SEND_RATE=500", "SEND_BURST=500", "USER_SENDS_PER_MINUTE=1000000", "USER_BYTES_PER_HOUR=1000000000")
	procs["gateway-a"] = startService(t, "gateway", append(gwEnv, "NATS_URL="+nodes[0].URL(), "HTTP_ADDR="+addrs[3])...)
	procs["gateway-b"] = startService(t, "gateway", append(gwEnv, "NATS_URL="+nodes[1].URL(), "HTTP_ADDR="+addrs[4])...)
	for _, a := range addrs {
		servicetest.WaitStatus(t, "http://"+a+"/readyz", 200, 60*time.Second)
	}

	admin := connectAs(t, nodes[2].URL(), "admin", "cluster-test-admin")
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, stream := range []string{chat.StreamName, chat.PresenceStream, "KV_" + chat.PresenceBucket, "KV_" + chat.RevokedBucket, "KV_" + chat.AuthLimitsBucket} {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatalf("stream %s: %v", stream, err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("stream %s has %d replicas, want 3", stream, r)
		}
	}

	t.Run("gateway permissions", func(t *testing.T) { checkGatewayPermissions(t, nodes[0].URL(), js) })

	// Two people, each on their own gateway and NATS node.
	cookie := map[string]string{}
	for _, u := range []struct{ account, name string }{{"alice", "Alice"}, {"bob", "Bob"}} {
		if r := postJSON(t, gwA+"/api/register", fmt.Sprintf(`{"account":%q,"password":"cluster-pass-42","name":%q}`, u.account, u.name), ""); r.status != http.StatusCreated {
			t.Fatalf("register %s: %d %s", u.account, r.status, r.body)
		}
		r := postJSON(t, gwB+"/api/login", fmt.Sprintf(`{"account":%q,"password":"cluster-pass-42"}`, u.account), "")
		if r.status != http.StatusOK || r.cookie == "" {
			t.Fatalf("login %s: %d %s", u.account, r.status, r.body)
		}
		cookie[u.account] = r.cookie
	}
	alice, aliceHello := dialChat(t, gwA, cookie["alice"], 0)
	bob, bobHello := dialChat(t, gwB, cookie["bob"], 0)
	aliceID := aliceHello["user"].(map[string]any)["id"].(string)
	bobID := bobHello["user"].(map[string]any)["id"].(string)
	alice.waitPresence(t, "Bob", true)
	bob.waitPresence(t, "Alice", true)

	// Lobby and direct messages cross gateways and nodes.
	alice.send(t, `{"type":"send","id":"hi","to":{"room":"lobby"},"text":"hello from node 0"}`)
	alice.waitFor(t, "ack of hi", func(o map[string]any) bool { return o["type"] == "ack" && o["id"] == "hi" })
	bob.waitFor(t, "alice's lobby message", func(o map[string]any) bool {
		return o["type"] == "message" && o["text"] == "hello from node 0" && o["from"].(map[string]any)["name"] == "Alice"
	})
	bob.send(t, fmt.Sprintf(`{"type":"send","id":"dm","to":{"user":%q},"text":"just you"}`, aliceID))
	alice.waitFor(t, "bob's direct message", func(o map[string]any) bool {
		return o["type"] == "message" && o["text"] == "just you" && o["to"].(map[string]any)["user"] == aliceID
	})
	bob.waitFor(t, "the echo of bob's direct message", func(o map[string]any) bool {
		return o["type"] == "message" && o["text"] == "just you"
	})
	alice.close()
	bob.close()

	t.Run("node failure", func(t *testing.T) {
		nodeFailure(t, nodes, js, gwA, gwB, cookie, aliceID, bobID)
		// The failure reached bob's gateway, which caught up after it
		// (or, failing that, closed its sockets for resume).
		if out := procs["gateway-b"].out.String(); !strings.Contains(out, "caught up after a NATS reconnect") &&
			!strings.Contains(out, "catch-up after a NATS reconnect failed") {
			t.Errorf("gateway b logged no catch-up after its node was killed:\n%s", out)
		}
	})

	// The deployment's permissions were enough: no service hit a
	// violation (the probe's own violations are in its name only).
	for name, p := range procs {
		if strings.Contains(strings.ToLower(p.out.String()), "permissions violation") {
			t.Errorf("%s hit a NATS permissions violation:\n%s", name, p.out.String())
		}
	}
	for _, n := range nodes {
		for _, line := range strings.Split(n.Output(), "\n") {
			if strings.Contains(line, "Violation") && !strings.Contains(line, "permission-probe") {
				t.Errorf("%s: %s", n.Name, line)
			}
		}
	}
}

// nodeFailure: alice keeps sending to the lobby while the NATS node of
// bob's gateway is killed. Every acknowledged message reaches bob exactly
// once (his gateway catches up from the stream once on another node),
// presence stays right, and the cluster is whole again when the node
// returns.
func nodeFailure(t *testing.T, nodes []*chaos.Node, js jetstream.JetStream, gwA, gwB string, cookie map[string]string, aliceID, bobID string) {
	const total = 150
	const killAt = 40

	recv := newReceiver(gwB, cookie["bob"])
	defer recv.stop()
	sendCtx, cancelSend := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelSend()

	acked := map[uint64]string{}
	sender := &resilientSender{gateway: gwA, cookie: cookie["alice"]}
	defer sender.close()
	for i := 1; i <= total; i++ {
		if i == killAt {
			nodes[1].Kill(t)
			t.Logf("killed %s after %d acknowledged messages", nodes[1].Name, len(acked))
		}
		id := fmt.Sprintf("m%03d", i)
		seq, err := sender.send(sendCtx, id, fmt.Sprintf("message %d", i))
		if err != nil {
			t.Fatalf("sending %s: %v", id, err)
		}
		if prev, dup := acked[seq]; dup {
			t.Fatalf("%s and %s acknowledged with the same seq %d", prev, id, seq)
		}
		acked[seq] = id
	}
	t.Logf("%d messages acknowledged; sender retries %d, reconnects %d", len(acked), sender.retries, sender.reconnects)

	poll.Until(t, 60*time.Second, func() error {
		missing := 0
		for seq := range acked {
			if recv.count(seq) == 0 {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("bob has not received %d of %d acknowledged messages (reconnects %d, close codes %v, last error %v)",
				missing, len(acked), recv.reconnects(), recv.closeCodes(), recv.lastErr())
		}
		return nil
	})
	for seq, id := range acked {
		if n := recv.count(seq); n != 1 {
			t.Errorf("%s (seq %d) delivered %d times", id, seq, n)
		}
	}
	// Bob's gateway lost its node: it caught up from the stream on
	// another, his socket left open, or, if that could not be done,
	// closed the socket for resume (4011).
	if code := recv.firstClose(); recv.reconnects() > 0 && code != chat.CloseResume {
		t.Errorf("bob's socket first closed with %d, want none or %d (resume)", code, chat.CloseResume)
	}
	t.Logf("bob got every message once after %d reconnects (close codes %v)", recv.reconnects(), recv.closeCodes())

	// Presence stays right: both online, one socket each (bob's old socket
	// went away, his new one counts), asked of the surviving nodes.
	watch := connectAs(t, nodes[0].URL(), "watch", "cluster-test-watch")
	poll.Until(t, 30*time.Second, func() error {
		var list chat.PresenceList
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := natsconn.RequestJSON(ctx, watch, chat.PresenceOnlineSubject, nil, &list); err != nil {
			return err
		}
		sockets := map[string]int{}
		for _, u := range list.Users {
			sockets[u.ID] = u.Sockets
		}
		if sockets[aliceID] != 1 || sockets[bobID] != 1 || len(sockets) != 2 {
			return fmt.Errorf("online %+v, want alice and bob with one socket each", list.Users)
		}
		return nil
	})

	// The node comes back with its store and catches up.
	nodes[1].Restart(t)
	nodes[1].WaitHealthy(t)
	poll.Until(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, chat.StreamName)
		if err != nil {
			return err
		}
		info := s.CachedInfo()
		if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			return fmt.Errorf("CHAT cluster %+v, want a leader and 2 replicas", info.Cluster)
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Offline {
				return fmt.Errorf("CHAT replica %s current=%v offline=%v", r.Name, r.Current, r.Offline)
			}
		}
		return nil
	})
	seq, err := sender.send(sendCtx, "after-recovery", "the cluster is whole")
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, func() error {
		if recv.count(seq) != 1 {
			return errors.New("bob has not received the message sent after the recovery")
		}
		return nil
	})
}

// checkGatewayPermissions: with the gateway's credentials, what the
// gateway must never do is refused by the servers.
func checkGatewayPermissions(t *testing.T, url string, admin jetstream.JetStream) {
	violations := make(chan string, 16)
	nc := connectAs(t, url, "gateway", "gateway-permission-probe", nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		violations <- err.Error()
	}))
	expectViolation := func(what, subject string) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case v := <-violations:
				if strings.Contains(strings.ToLower(v), "permissions violation") && strings.Contains(v, subject) {
					return
				}
			case <-deadline:
				t.Errorf("%s: no permissions violation for %s", what, subject)
				return
			}
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	err = js.DeleteStream(ctx, chat.StreamName)
	cancel()
	if err == nil {
		t.Error("the gateway deleted the CHAT stream")
	}
	expectViolation("delete the stream", "$JS.API.STREAM.DELETE.CHAT")
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
	_, err = nc.RequestWithContext(ctx, "$JS.API.STREAM.PURGE.CHAT", nil)
	cancel()
	if err == nil {
		t.Error("the gateway could ask to purge the CHAT stream")
	}
	expectViolation("purge the stream", "$JS.API.STREAM.PURGE.CHAT")

	// (presence.user is the gateway's to ask: a user's sockets on every
	// gateway, for SOCKETS_PER_USER.)
	for _, subject := range []string{"presence.events.someone", chat.AuthRevokedSubject} {
		if err := nc.Publish(subject, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		expectViolation("publish on another service's subject", subject)
	}
	for _, subject := range []string{"$SYS.>", "_INBOX.auth.>", "chat.>"} {
		if _, err := nc.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		expectViolation("subscribe", subject)
	}

	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := admin.Stream(ctx, chat.StreamName); err != nil {
		t.Fatalf("CHAT after the gateway's attempts: %v", err)
	}
}

// chatSocket is a websocket to a gateway, read into objects by a goroutine.
type chatSocket struct {
	conn *websocket.Conn
	objs chan map[string]any // closed when the socket ends
	code int                 // close code, valid once objs is closed
}

func openChat(gateway, cookie string, resumeAfter uint64) (*chatSocket, map[string]any, error) {
	h := http.Header{"Cookie": {cookie}, "Origin": {gateway}}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial("ws"+strings.TrimPrefix(gateway, "http")+"/ws", h)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, nil, err
	}
	if resumeAfter > 0 {
		if err := conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"resume","after":%d}`, resumeAfter)); err != nil {
			_ = conn.Close()
			return nil, nil, err
		}
	}
	s := &chatSocket{conn: conn, objs: make(chan map[string]any, 1024)}
	go s.read()
	select {
	case hello, ok := <-s.objs:
		if !ok || hello["type"] != "hello" {
			_ = conn.Close()
			return nil, nil, fmt.Errorf("first frame %v (close %d)", hello, s.code)
		}
		return s, hello, nil
	case <-time.After(10 * time.Second):
		_ = conn.Close()
		return nil, nil, errors.New("no hello within 10s")
	}
}

// undecodable marks a frame line that is not a JSON object.
const undecodable = "(undecodable)"

func (s *chatSocket) read() {
	defer close(s.objs)
	for {
		_, data, err := s.conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				s.code = ce.Code
			}
			return
		}
		for _, line := range strings.Split(string(data), "\n") {
			var o map[string]any
			if err := json.Unmarshal([]byte(line), &o); err != nil {
				o = map[string]any{"type": undecodable, "line": line, "err": err.Error()}
			}
			s.objs <- o
		}
	}
}

func (s *chatSocket) close() { _ = s.conn.Close() }

func (s *chatSocket) send(t *testing.T, frame string) {
	t.Helper()
	if err := s.conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatal(err)
	}
}

func dialChat(t *testing.T, gateway, cookie string, resumeAfter uint64) (*chatSocket, map[string]any) {
	t.Helper()
	s, hello, err := openChat(gateway, cookie, resumeAfter)
	if err != nil {
		t.Fatalf("websocket to %s: %v", gateway, err)
	}
	t.Cleanup(s.close)
	return s, hello
}

// waitFor reads objects until match, failing after 20 s.
func (s *chatSocket) waitFor(t *testing.T, what string, match func(map[string]any) bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case o, ok := <-s.objs:
			if !ok {
				t.Fatalf("socket closed (%d) waiting for %s", s.code, what)
			}
			if o["type"] == undecodable {
				t.Fatalf("frame line %q: %v", o["line"], o["err"])
			}
			if match(o) {
				return
			}
		case <-deadline:
			t.Fatalf("no %s within 20s", what)
		}
	}
}

// waitPresence waits until the socket has been told name is online (in
// the list or a change) or, with online false, offline.
func (s *chatSocket) waitPresence(t *testing.T, name string, online bool) {
	t.Helper()
	s.waitFor(t, fmt.Sprintf("%s online=%v", name, online), func(o map[string]any) bool {
		if o["type"] != "presence" {
			return false
		}
		if users, ok := o["users"].([]any); ok && online {
			for _, u := range users {
				if u.(map[string]any)["name"] == name {
					return true
				}
			}
		}
		u, ok := o["user"].(map[string]any)
		return ok && u["name"] == name && o["online"] == online
	})
}

// resilientSender sends as a browser does: wait for the ack, retry the
// same id on `unavailable` or a lost socket (stored once either way).
type resilientSender struct {
	gateway, cookie     string
	sock                *chatSocket
	retries, reconnects int
}

func (r *resilientSender) send(ctx context.Context, id, text string) (uint64, error) {
	frame := fmt.Sprintf(`{"type":"send","id":%q,"to":{"room":"lobby"},"text":%q}`, id, text)
	var lastErr error
	for ctx.Err() == nil {
		if r.sock == nil {
			s, _, err := openChat(r.gateway, r.cookie, 0)
			if err != nil {
				lastErr = err
				waitOrDone(ctx, 200*time.Millisecond)
				continue
			}
			r.sock = s
			r.reconnects++
		}
		if err := r.sock.conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			lastErr = err
			r.drop()
			continue
		}
		seq, retry, err := r.awaitAck(ctx, id)
		if err == nil {
			return seq, nil
		}
		lastErr = err
		r.retries++
		if !retry {
			return 0, err
		}
		waitOrDone(ctx, 100*time.Millisecond)
	}
	return 0, fmt.Errorf("gave up: %w (last: %v)", ctx.Err(), lastErr)
}

func (r *resilientSender) awaitAck(ctx context.Context, id string) (seq uint64, retry bool, err error) {
	for {
		select {
		case o, ok := <-r.sock.objs:
			if !ok {
				code := r.sock.code
				r.drop()
				return 0, true, fmt.Errorf("socket closed (%d)", code)
			}
			if o["id"] != id {
				continue
			}
			switch o["type"] {
			case "ack":
				return uint64(o["seq"].(float64)), false, nil
			case "error":
				retry := o["code"] == chat.CodeUnavailable || o["code"] == chat.CodeRateLimited
				return 0, retry, fmt.Errorf("error frame %v", o)
			}
		case <-ctx.Done():
			return 0, false, ctx.Err()
		}
	}
}

func (r *resilientSender) drop() {
	if r.sock != nil {
		r.sock.close()
		r.sock = nil
	}
}

func (r *resilientSender) close() { r.drop() }

func waitOrDone(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// receiver is bob's browser: it counts every message by seq, and when its
// socket ends it reconnects and resumes after the last seq it saw.
type receiver struct {
	mu      sync.Mutex
	counts  map[uint64]int
	last    uint64
	closes  []int
	err     error
	recon   int
	done    chan struct{}
	stopped chan struct{}
}

func newReceiver(gateway, cookie string) *receiver {
	r := &receiver{counts: map[uint64]int{}, done: make(chan struct{}), stopped: make(chan struct{})}
	ready := make(chan struct{})
	go r.run(gateway, cookie, ready)
	<-ready
	return r
}

func (r *receiver) run(gateway, cookie string, ready chan struct{}) {
	defer close(r.stopped)
	first := true
	for {
		r.mu.Lock()
		after := r.last
		r.mu.Unlock()
		s, hello, err := openChat(gateway, cookie, after)
		if err != nil {
			r.setErr(err)
			select {
			case <-r.done:
				return
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		if first {
			// From now on every lobby message counts.
			r.mu.Lock()
			r.last = uint64(hello["seq"].(float64))
			r.mu.Unlock()
			close(ready)
			first = false
		} else {
			r.mu.Lock()
			r.recon++
			r.mu.Unlock()
		}
		if !r.consume(s) {
			return
		}
	}
}

// consume reads s until it ends (true: reconnect) or the receiver stops.
func (r *receiver) consume(s *chatSocket) bool {
	defer s.close()
	for {
		select {
		case o, ok := <-s.objs:
			if !ok {
				r.mu.Lock()
				r.closes = append(r.closes, s.code)
				r.mu.Unlock()
				return true
			}
			switch o["type"] {
			case "message":
				seq := uint64(o["seq"].(float64))
				r.mu.Lock()
				r.counts[seq]++
				r.last = max(r.last, seq)
				r.mu.Unlock()
			case "resumed":
				if o["complete"] != true {
					r.setErr(fmt.Errorf("resume incomplete: %v", o))
				}
			case "error":
				r.setErr(fmt.Errorf("error frame: %v", o))
			}
		case <-r.done:
			return false
		}
	}
}

func (r *receiver) setErr(err error) {
	r.mu.Lock()
	r.err = err
	r.mu.Unlock()
}

func (r *receiver) count(seq uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[seq]
}

func (r *receiver) reconnects() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recon
}

func (r *receiver) firstClose() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.closes) == 0 {
		return 0
	}
	return r.closes[0]
}

func (r *receiver) closeCodes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.closes)
}

func (r *receiver) lastErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *receiver) stop() {
	close(r.done)
	<-r.stopped
}
