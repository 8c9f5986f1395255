package main

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/servicetest"
)

// tokenAt is a cookie header for a token of user issued at iat.
func (e *chatEnv) tokenAt(t *testing.T, user string, iat time.Time) http.Header {
	t.Helper()
	s, _, err := e.key.Issue(user, e.users[user], iat, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return http.Header{"Cookie": {chat.TokenCookie + "=" + s}}
}

// handshakeStatus is the status of a /ws handshake on gw with header h
// (101 when it upgraded).
func handshakeStatus(t *testing.T, gw *servicetest.Service, h http.Header) int {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(wsURL(gw), h)
	if conn != nil {
		_ = conn.Close()
	}
	if resp == nil {
		t.Fatalf("no HTTP answer: %v", err)
	}
	return resp.StatusCode
}

// TestLogoutEverywhere: a revocation of every token of a user issued up
// to a second, as auth stores it for "log out everywhere" and a password
// change, closes the user's sockets on every gateway with 4001 and
// refuses those tokens at the handshake, while a token issued after it
// (auth issues the next one with a later iat, even within the same
// second) and other users are unaffected.
func TestLogoutEverywhere(t *testing.T) {
	e := startChat(t, 2, nil)
	through := time.Now().Truncate(time.Second)
	old := e.tokenAt(t, "alice", through.Add(-5*time.Second))
	sameSecond := e.tokenAt(t, "alice", through)
	after := e.tokenAt(t, "alice", through.Add(time.Second))

	var revoked []*wsClient
	for _, gw := range e.gws {
		for _, h := range []http.Header{old, sameSecond} {
			c := dialWith(t, wsURL(gw), h)
			c.nextOf(t, "hello")
			revoked = append(revoked, c)
		}
	}
	kept := dialWith(t, wsURL(e.gws[1]), after)
	kept.nextOf(t, "hello")
	bob, _ := e.dial(t, e.gws[0], "bob")

	kv, err := chat.EnsureRevokedBucket(context.Background(), natstest.JetStream(t, e.ns.URL()), 1)
	if err != nil {
		t.Fatal(err)
	}
	key, err := chat.RevokedUserKey("alice")
	if err != nil {
		t.Fatal(err)
	}
	rev, _ := json.Marshal(chat.Revocation{User: "alice", IssuedThrough: through, ExpiresAt: through.Add(time.Hour)})
	if _, err := kv.Create(context.Background(), key, rev, jetstream.KeyTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for i, c := range revoked {
		if code := c.closed(t); code != chat.CloseTokenRevoked {
			t.Fatalf("socket %d of alice closed with %d, want %d", i, code, chat.CloseTokenRevoked)
		}
	}
	// Each gateway closed its sockets once the revocation was in its set:
	// handshakes are decided by it from now on.
	for i, gw := range e.gws {
		tests := []struct {
			name   string
			header http.Header
			want   int
		}{
			{"token issued before", old, http.StatusUnauthorized},
			{"token issued in the same second", sameSecond, http.StatusUnauthorized},
			{"token issued after", after, http.StatusSwitchingProtocols},
			{"another user", e.tokenAt(t, "carol", through.Add(-5*time.Second)), http.StatusSwitchingProtocols},
		}
		for _, tt := range tests {
			if got := handshakeStatus(t, gw, tt.header); got != tt.want {
				t.Errorf("gateway %d, %s: status %d, want %d", i, tt.name, got, tt.want)
			}
		}
	}
	for _, c := range []*wsClient{kept, bob} {
		c.send(t, `{"type":"send","id":"s1","to":{"room":"lobby"},"text":"still here"}`)
		c.nextOf(t, "ack")
	}
}

// TestLogoutEverywhereEvent: the auth.revoked event of a user revocation
// closes the sockets it covers on its own, should it arrive before the
// bucket's update.
func TestLogoutEverywhereEvent(t *testing.T) {
	e := startChat(t, 2, nil)
	through := time.Now().Truncate(time.Second)
	var revoked []*wsClient
	for _, gw := range e.gws {
		c := dialWith(t, wsURL(gw), e.tokenAt(t, "alice", through))
		c.nextOf(t, "hello")
		revoked = append(revoked, c)
	}
	kept := dialWith(t, wsURL(e.gws[0]), e.tokenAt(t, "alice", through.Add(time.Second)))
	kept.nextOf(t, "hello")

	rev, _ := json.Marshal(chat.Revocation{User: "alice", IssuedThrough: through, ExpiresAt: through.Add(time.Hour)})
	if err := e.nc.Publish(chat.AuthRevokedSubject, rev); err != nil {
		t.Fatal(err)
	}
	for i, c := range revoked {
		if code := c.closed(t); code != chat.CloseTokenRevoked {
			t.Fatalf("socket %d closed with %d, want %d", i, code, chat.CloseTokenRevoked)
		}
	}
	kept.send(t, `{"type":"send","id":"s1","to":{"room":"lobby"},"text":"still here"}`)
	kept.nextOf(t, "ack")
}
