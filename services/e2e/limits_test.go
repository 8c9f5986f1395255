package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/poll"
)

// SOCKETS_PER_USER counts a user's sockets on every gateway: with one on
// each of two gateways and a limit of 2, a third is refused on either,
// with 429 and a JSON body, while presence is up to answer.
func TestSocketsPerUserAcrossGateways(t *testing.T) {
	s := startBrowserStack(t, "SOCKETS_PER_USER=2")
	gw := s.gateways
	if r := postJSON(t, gw[0]+"/api/register", `{"account":"alice","password":"two-tabs-2026","name":"Alice"}`, ""); r.status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	r := postJSON(t, gw[0]+"/api/login", `{"account":"alice","password":"two-tabs-2026"}`, "")
	if r.status != http.StatusOK {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	var me struct{ User struct{ ID string } }
	_ = json.Unmarshal([]byte(r.body), &me)
	a, _ := dialChat(t, gw[0], r.cookie, 0)
	defer a.close()
	b, _ := dialChat(t, gw[1], r.cookie, 0)
	defer b.close()

	nc := natstest.Connect(t, strings.TrimPrefix(s.env[0], "NATS_URL="))
	poll.Until(t, 15*time.Second, func() error {
		var resp chat.PresenceUserResponse
		if err := natsconn.RequestJSON(t.Context(), nc, chat.PresenceUserSubject, chat.PresenceUserRequest{ID: me.User.ID}, &resp); err != nil {
			return err
		}
		if resp.Sockets != 2 {
			return fmt.Errorf("presence counts %d sockets, want 2", resp.Sockets)
		}
		return nil
	})
	for _, g := range gw {
		h := http.Header{"Cookie": {r.cookie}, "Origin": {g}}
		c, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(g, "http")+"/ws", h)
		if err == nil {
			_ = c.Close()
			t.Fatalf("a third socket on %s was opened", g)
		}
		if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("a third socket on %s: %v (%v), want 429", g, err, resp)
		}
	}
}
