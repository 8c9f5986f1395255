package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/auth/users"
	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/token"
)

// tokenIssuedAt reads a token's iat without verifying it (the tests
// compare it with a revocation's second).
func tokenIssuedAt(t *testing.T, tok string) time.Time {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a JWT", tok)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		IssuedAt int64 `json:"iat"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return time.Unix(claims.IssuedAt, 0)
}

// subscribeRevoked collects what auth publishes on auth.revoked.
func subscribeRevoked(t *testing.T, e *authEnv) <-chan *nats.Msg {
	t.Helper()
	nc := natstest.Connect(t, e.ns.URL())
	events := make(chan *nats.Msg, 16)
	if _, err := nc.ChanSubscribe(chat.AuthRevokedSubject, events); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return events
}

// nextUserRevocation is the next revocation event, which must revoke
// every token of user.
func nextUserRevocation(t *testing.T, events <-chan *nats.Msg, user string) chat.Revocation {
	t.Helper()
	select {
	case m := <-events:
		var r chat.Revocation
		if err := json.Unmarshal(m.Data, &r); err != nil || r.User != user || r.TokenID != "" || r.IssuedThrough.IsZero() {
			t.Fatalf("revocation event = %s (%v), want every token of %s", m.Data, err, user)
		}
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no event on " + chat.AuthRevokedSubject)
	}
	return chat.Revocation{}
}

// meStatus is the status of GET /api/me with tok as a bearer token.
func (e *authEnv) meStatus(t *testing.T, tok string) int {
	t.Helper()
	return e.req(t, "GET", "/api/me", "", "Authorization", "Bearer "+tok).status
}

// TestLogoutEverywhere: POST /api/logout-all revokes every token of the
// user (the one it was sent with, others, across an auth restart),
// clears this browser's cookie and tells the gateways; a login right
// after, in the same second as like as not, gets a token that works.
func TestLogoutEverywhere(t *testing.T) {
	e := startAuth(t)
	id := e.register(t, "grace", goodPW, "Grace").body["user"].(map[string]any)["id"].(string)
	e.register(t, "henry", goodPW, "Henry")
	phone, desktop := e.mustLogin(t, "grace", goodPW), e.mustLogin(t, "grace", goodPW)
	henry := e.mustLogin(t, "henry", goodPW)
	events := subscribeRevoked(t, e)

	r := e.req(t, "POST", "/api/logout-all", "{}", "Cookie", chat.TokenCookie+"="+phone)
	if r.status != http.StatusOK {
		t.Fatalf("logout-all: %d %s", r.status, r.raw)
	}
	if c := r.header.Get("Set-Cookie"); !strings.Contains(c, chat.TokenCookie+"=;") || !strings.Contains(c, "Max-Age=0") {
		t.Fatalf("logout-all Set-Cookie = %q, want the cookie cleared", c)
	}
	rev := nextUserRevocation(t, events, id)
	if through, err := time.Parse(time.RFC3339, fmt.Sprint(r.body["revoked_through"])); err != nil || !through.Equal(rev.IssuedThrough) {
		t.Fatalf("revoked_through = %v (%v), event says %v", r.body["revoked_through"], err, rev.IssuedThrough)
	}
	again := e.mustLogin(t, "grace", goodPW)
	if iat := tokenIssuedAt(t, again); !iat.After(rev.IssuedThrough) {
		t.Fatalf("a login after the revocation got iat %v, not after %v", iat, rev.IssuedThrough)
	}
	check := func(when string) {
		t.Helper()
		for _, tt := range []struct {
			name string
			tok  string
			want int
		}{
			{"token it was sent with", phone, http.StatusUnauthorized},
			{"another session", desktop, http.StatusUnauthorized},
			{"login after", again, http.StatusOK},
			{"another user", henry, http.StatusOK},
		} {
			if got := e.meStatus(t, tt.tok); got != tt.want {
				t.Errorf("%s, %s: /api/me %d, want %d", when, tt.name, got, tt.want)
			}
		}
		if r := e.req(t, "GET", "/api/session", "", "Cookie", chat.TokenCookie+"="+desktop); r.status != 200 || r.body["user"] != nil {
			t.Errorf("%s: session of a revoked token = %d %s", when, r.status, r.raw)
		}
	}
	check("after logout-all")
	e.restart(t)
	check("after auth restart")

	// Once more, likely within the same second: the stored revocation is
	// replaced, never moved back, and covers the token it was sent with.
	if r := e.req(t, "POST", "/api/logout-all", "{}", "Authorization", "Bearer "+again); r.status != http.StatusOK {
		t.Fatalf("second logout-all: %d %s", r.status, r.raw)
	}
	if second := nextUserRevocation(t, events, id); second.IssuedThrough.Before(rev.IssuedThrough) {
		t.Fatalf("second revocation through %v, before the first's %v", second.IssuedThrough, rev.IssuedThrough)
	}
	if got := e.meStatus(t, again); got != http.StatusUnauthorized {
		t.Fatalf("token revoked by the second logout-all: /api/me %d", got)
	}
	if got := e.meStatus(t, e.mustLogin(t, "grace", goodPW)); got != http.StatusOK {
		t.Fatalf("login after the second logout-all: /api/me %d", got)
	}
	if r := e.req(t, "POST", "/api/logout-all", "{}", "Authorization", "Bearer "+again); r.status != http.StatusUnauthorized {
		t.Fatalf("logout-all with a revoked token: %d %s", r.status, r.raw)
	}
}

func testKey(t *testing.T) token.Key {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return token.NewKey(priv)
}

// TestIssueAfterRevocation: a token is issued with an iat after the
// user's revocation, even within its second or from a clock behind it.
func TestIssueAfterRevocation(t *testing.T) {
	a := &api{key: testKey(t), lifetime: time.Hour}
	u := users.User{ID: "u1", Name: "U"}
	through := time.Date(2026, 11, 26, 12, 0, 5, 0, time.UTC)
	rev := chat.Revocation{User: "u1", IssuedThrough: through}
	tests := []struct {
		name string
		r    chat.Revocation
		now  time.Time
		want time.Time
	}{
		{"no revocation", chat.Revocation{}, through.Add(300 * time.Millisecond), through},
		{"same second", rev, through.Add(300 * time.Millisecond), through.Add(time.Second)},
		{"clock behind", rev, through.Add(-2 * time.Second), through.Add(time.Second)},
		{"later second", rev, through.Add(2500 * time.Millisecond), through.Add(2 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, c, err := a.issueAfter(u, tt.now, tt.r)
			if err != nil {
				t.Fatal(err)
			}
			if !c.IssuedAt.Time.Equal(tt.want) || tt.r.RevokesIssuedAt(c.IssuedAt.Time) {
				t.Fatalf("iat %v, want %v", c.IssuedAt.Time, tt.want)
			}
			if got := c.ExpiresAt.Sub(c.IssuedAt.Time); got != time.Hour {
				t.Fatalf("lifetime %v, want 1h", got)
			}
		})
	}
}

// TestUserRevocationCoversEveryTokenIssued: a revocation names the second
// of now, or the second after the stored one when that is now's or later
// (tokens issued since may carry it), never an earlier one.
func TestUserRevocationCoversEveryTokenIssued(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 5, 700e6, time.UTC)
	second := now.Truncate(time.Second)
	tests := []struct {
		name string
		old  time.Time
		want time.Time
	}{
		{"none stored", time.Time{}, second},
		{"earlier stored", second.Add(-time.Hour), second},
		{"a second ago stored", second.Add(-time.Second), second},
		{"same second stored", second, second.Add(time.Second)},
		{"later stored", second.Add(3 * time.Second), second.Add(4 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := chat.Revocation{User: "u1", IssuedThrough: tt.old}
			r := userRevocation("u1", now, old, time.Hour)
			if !r.IssuedThrough.Equal(tt.want) || !r.ExpiresAt.Equal(tt.want.Add(time.Hour)) || r.User != "u1" || r.TokenID != "" {
				t.Fatalf("got %+v, want through %v", r, tt.want)
			}
			// Whatever was issued after old is revoked now.
			if !tt.old.IsZero() {
				_, c, err := (&api{key: testKey(t), lifetime: time.Hour}).issueAfter(users.User{ID: "u1"}, now, old)
				if err != nil || !r.RevokesIssuedAt(c.IssuedAt.Time) {
					t.Fatalf("a token issued after the old revocation (iat %v) survives the new one (%v)", c.IssuedAt, err)
				}
			}
		})
	}
}

func TestLeadLimit(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 5, 0, time.UTC)
	tests := []struct {
		name      string
		through   time.Time
		wantRetry time.Duration // 0: allowed
	}{
		{"none", time.Time{}, 0},
		{"past", now.Add(-time.Minute), 0},
		{"at the lead", now.Add(maxRevocationLead), 0},
		{"past the lead", now.Add(maxRevocationLead + 3*time.Second), 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := leadLimit(chat.Revocation{IssuedThrough: tt.through}, now)
			var rl *rateLimitError
			switch {
			case tt.wantRetry == 0 && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantRetry != 0 && (!errors.As(err, &rl) || rl.RetryAfter != tt.wantRetry):
				t.Fatalf("got %v, want a 429 with Retry-After %v", err, tt.wantRetry)
			}
		})
	}
}

// TestRapidLogoutEverywhere: log out everywhere and log in again, over
// and over as fast as it goes: every login's token works (its iat never
// runs past what verifiers accept), and every logout-all either revokes
// or, once the revocation runs maxRevocationLead ahead, is refused with
// 429 and Retry-After.
func TestRapidLogoutEverywhere(t *testing.T) {
	e := startAuth(t)
	e.register(t, "lena", goodPW, "Lena")
	refused := 0
	for i := range 15 {
		tok := e.mustLogin(t, "lena", goodPW)
		if got := e.meStatus(t, tok); got != http.StatusOK {
			t.Fatalf("round %d: a fresh token: /api/me %d", i, got)
		}
		r := e.req(t, "POST", "/api/logout-all", "{}", "Authorization", "Bearer "+tok)
		switch {
		case r.status == http.StatusOK:
			if got := e.meStatus(t, tok); got != http.StatusUnauthorized {
				t.Fatalf("round %d: the token it was sent with: /api/me %d", i, got)
			}
		case r.status == http.StatusTooManyRequests && r.header.Get("Retry-After") != "":
			refused++
			if got := e.meStatus(t, tok); got != http.StatusOK {
				t.Fatalf("round %d: refused, yet the token is gone: /api/me %d", i, got)
			}
		default:
			t.Fatalf("round %d: logout-all %d %s", i, r.status, r.raw)
		}
	}
	t.Logf("%d of 15 refused for running ahead of the clock", refused)
}

// TestUserRevocationStoredWithTTL: the revocation is kept in the bucket
// until the tokens it revokes have expired, and replaced in place.
func TestUserRevocationStoredWithTTL(t *testing.T) {
	e := startAuth(t, map[string]string{"TOKEN_LIFETIME": "1h"})
	id := e.register(t, "kim", goodPW, "Kim").body["user"].(map[string]any)["id"].(string)
	js := natstest.JetStream(t, e.ns.URL())
	stream, err := js.Stream(context.Background(), "KV_"+chat.RevokedBucket)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := chat.RevokedUserKey(id)
	for i := range 2 {
		tok := e.mustLogin(t, "kim", goodPW)
		if r := e.req(t, "POST", "/api/logout-all", "{}", "Authorization", "Bearer "+tok); r.status != http.StatusOK {
			t.Fatalf("logout-all %d: %d %s", i+1, r.status, r.raw)
		}
		m, err := stream.GetLastMsgForSubject(context.Background(), "$KV."+chat.RevokedBucket+"."+key)
		if err != nil {
			t.Fatal(err)
		}
		var r chat.Revocation
		if err := json.Unmarshal(m.Data, &r); err != nil || r.User != id {
			t.Fatalf("stored %s (%v)", m.Data, err)
		}
		ttl, err := time.ParseDuration(m.Header.Get("Nats-TTL"))
		if err != nil {
			t.Fatalf("write %d: Nats-TTL %q: %v", i+1, m.Header.Get("Nats-TTL"), err)
		}
		if want := time.Until(r.IssuedThrough.Add(time.Hour + token.Leeway)); ttl < want-5*time.Second || ttl > want+time.Second {
			t.Fatalf("write %d: TTL %v, want about %v", i+1, ttl, want)
		}
	}
}
