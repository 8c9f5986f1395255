package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/mongotest"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/poll"
	"github.com/natter/natter/services/servicetest"
)

// Short presence timing, the same for presence and both gateways (the
// bucket's TTL is part of its configuration).
var presenceTiming = []string{"PRESENCE_TTL=2s", "PRESENCE_HEARTBEAT=500ms"}

// presenceStack is NATS and FerretDB in-process; auth, presence and two
// gateways as binaries, so a gateway can be paused and killed.
type presenceStack struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	gateways [2]string
	gw       [2]*service
}

func startPresenceStack(t *testing.T) *presenceStack {
	t.Helper()
	ns := natstest.Start(t)
	db := mongotest.Start(t)
	addrs := servicetest.FreeAddrs(t, 4)
	startService(t, "auth", "TRUSTED_PROXIES=127.0.0.1", "NATS_URL="+ns.URL(), "MONGO_URI="+db.URI(), "HTTP_ADDR="+addrs[0],
		"AUTH_SIGNING_KEY_FILE="+filepath.Join(t.TempDir(), "key.pem"), "AUTH_GENERATE_SIGNING_KEY=true",
		"ARGON2_MEMORY_KIB=4096", "ARGON2_ITERATIONS=1")
	startService(t, "presence", append([]string{"NATS_URL=" + ns.URL(), "HTTP_ADDR=" + addrs[1]}, presenceTiming...)...)
	s := &presenceStack{nc: natstest.Connect(t, ns.URL()), js: natstest.JetStream(t, ns.URL())}
	for i := range 2 {
		s.gateways[i] = "http://" + addrs[2+i]
		s.gw[i] = startService(t, "gateway", append([]string{"NATS_URL=" + ns.URL(), "AUTH_URL=http://" + addrs[0], "HTTP_ADDR=" + addrs[2+i]}, presenceTiming...)...)
	}
	for _, a := range addrs {
		servicetest.WaitStatus(t, "http://"+a+"/readyz", 200, 60*time.Second)
	}
	return s
}

// login registers account and logs in; it returns the cookie and user id.
func (s *presenceStack) login(t *testing.T, account, name string) (string, string) {
	t.Helper()
	gw := s.gateways[1]
	if r := postJSON(t, gw+"/api/register", fmt.Sprintf(`{"account":%q,"password":"presence-pass-7","name":%q}`, account, name), ""); r.status != http.StatusCreated {
		t.Fatalf("register %s: %d %s", account, r.status, r.body)
	}
	r := postJSON(t, gw+"/api/login", fmt.Sprintf(`{"account":%q,"password":"presence-pass-7"}`, account), "")
	var me struct{ User struct{ ID string } }
	if err := json.Unmarshal([]byte(r.body), &me); r.status != http.StatusOK || err != nil || me.User.ID == "" {
		t.Fatalf("login %s: %d %s", account, r.status, r.body)
	}
	return r.cookie, me.User.ID
}

// waitSockets polls presence.user until id has want sockets.
func (s *presenceStack) waitSockets(t *testing.T, id string, want int) {
	t.Helper()
	poll.Until(t, 15*time.Second, func() error {
		var resp chat.PresenceUserResponse
		if err := natsconn.RequestJSON(t.Context(), s.nc, chat.PresenceUserSubject, chat.PresenceUserRequest{ID: id}, &resp); err != nil {
			return err
		}
		if resp.Sockets != want || resp.Online != (want > 0) {
			return fmt.Errorf("presence counts %d sockets (online %v), want %d", resp.Sockets, resp.Online, want)
		}
		return nil
	})
}

// waitClosed reads s until it closes, and returns its close code.
func waitClosed(t *testing.T, s *chatSocket) int {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case _, ok := <-s.objs:
			if !ok {
				return s.code
			}
		case <-deadline:
			t.Fatal("socket not closed within 20s")
		}
	}
}

// A gateway paused past the presence TTL, then killed: its users go
// offline (unless they have a socket on the other gateway); back from
// the pause it closes its sockets with 4010 rather than bringing their
// presence back; killed, its keys leave the bucket.
func TestPresenceOfAPausedThenKilledGateway(t *testing.T) {
	s := startPresenceStack(t)
	a, b := s.gateways[0], s.gateways[1]
	aliceCookie, alice := s.login(t, "alice", "Alice")
	bobCookie, _ := s.login(t, "bob", "Bob")
	carolCookie, carol := s.login(t, "carol", "Carol")
	daveCookie, dave := s.login(t, "dave", "Dave")
	bobSock, _ := dialChat(t, b, bobCookie, 0) // watches the others
	aliceSock, _ := dialChat(t, a, aliceCookie, 0)
	carolA, _ := dialChat(t, a, carolCookie, 0)
	dialChat(t, b, carolCookie, 0) // carol's second tab, on the other gateway
	bobSock.waitPresence(t, "Alice", true)
	s.waitSockets(t, carol, 2)

	// Paused past the TTL: its lease expires; alice goes offline, carol
	// keeps her socket on b.
	gwA := s.gw[0].cmd.Process
	if err := gwA.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gwA.Signal(syscall.SIGCONT) })
	bobSock.waitPresence(t, "Alice", false)
	s.waitSockets(t, carol, 1)
	// Back: the gateway finds its lease gone and closes those sockets
	// (4010: reconnect) instead of bringing them back.
	if err := gwA.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for name, sock := range map[string]*chatSocket{"alice's": aliceSock, "carol's": carolA} {
		if code := waitClosed(t, sock); code != chat.ClosePresenceLost {
			t.Errorf("%s socket on the paused gateway closed with %d, want %d", name, code, chat.ClosePresenceLost)
		}
	}
	s.waitSockets(t, alice, 0)
	// Reconnecting to it works: the gateway starts a new lease.
	dialChat(t, a, aliceCookie, 0)
	dialChat(t, a, carolCookie, 0)
	bobSock.waitPresence(t, "Alice", true)
	s.waitSockets(t, carol, 2)

	// Killed: no goodbye. Its users go offline when its lease expires,
	// all at the revision of its expiry, and presence deletes its socket
	// keys.
	dialChat(t, a, daveCookie, 0)
	bobSock.waitPresence(t, "Dave", true)
	changes, err := s.nc.SubscribeSync(chat.PresenceChangedSubjects)
	if err != nil {
		t.Fatal(err)
	}
	if err := gwA.Kill(); err != nil {
		t.Fatal(err)
	}
	offline := map[string]uint64{}
	for len(offline) < 2 {
		m, err := changes.NextMsg(20 * time.Second)
		if err != nil {
			t.Fatalf("offline changes after the kill: %v (got %v)", err, offline)
		}
		var ev chat.PresenceEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Online {
			t.Fatalf("change after the kill: %s", m.Data)
		}
		offline[ev.User.Name] = ev.Rev
	}
	// Several changes at one revision: receivers must apply them all
	// (chat.PresenceEvent).
	if offline["Alice"] == 0 || offline["Alice"] != offline["Dave"] {
		t.Errorf("offline changes after the kill: %v, want Alice and Dave at one revision", offline)
	}
	s.waitSockets(t, alice, 0)
	s.waitSockets(t, dave, 0)
	gone := map[string]bool{}
	bobSock.waitFor(t, "alice and dave offline", func(o map[string]any) bool {
		if u, ok := o["user"].(map[string]any); ok && o["type"] == "presence" && o["online"] == false {
			gone[u["name"].(string)] = true
		}
		return gone["Alice"] && gone["Dave"]
	})
	s.waitSockets(t, carol, 1)
	kv, err := s.js.KeyValue(t.Context(), chat.PresenceBucket)
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, func() error {
		keys, err := presenceKeys(t.Context(), kv)
		if err != nil {
			return err
		}
		// b's lease, bob's and carol's sockets on b.
		if len(keys) != 3 {
			return fmt.Errorf("presence keys %v, want b's lease and 2 sockets", keys)
		}
		return nil
	})
}

func presenceKeys(ctx context.Context, kv jetstream.KeyValue) ([]string, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = lister.Stop() }()
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	if len(keys) == 0 || strings.Count(strings.Join(keys, " "), chat.PresenceGatewayPrefix) != 1 {
		return keys, fmt.Errorf("presence keys %v, want exactly one lease", keys)
	}
	return keys, nil
}
