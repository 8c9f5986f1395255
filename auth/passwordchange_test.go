package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/natter/natter/services/chat"
)

// TestChangePassword: POST /api/password checks the current password
// and the new one's rules, then replaces the password, revokes every
// token of the user and logs this browser in again.
func TestChangePassword(t *testing.T) {
	const newPW = "green-lantern-77"
	e := startAuth(t)
	id := e.register(t, "ivy-green", goodPW, "Ivy").body["user"].(map[string]any)["id"].(string)
	here, elsewhere := e.mustLogin(t, "ivy-green", goodPW), e.mustLogin(t, "ivy-green", goodPW)
	cookie := []string{"Cookie", chat.TokenCookie + "=" + here}
	events := subscribeRevoked(t, e)

	refused := []struct {
		name, body        string
		status            int
		code, field, rule string
	}{
		{"wrong current", `{"current":"not-my-password","new":"` + newPW + `"}`, 403, "wrong_password", "current", ""},
		{"no current", `{"new":"` + newPW + `"}`, 400, "invalid_input", "current", "required"},
		{"no new", `{"current":"` + goodPW + `"}`, 400, "invalid_input", "new", "required"},
		{"new too short", `{"current":"` + goodPW + `","new":"short"}`, 400, "invalid_input", "new", "length"},
		{"new too common", `{"current":"` + goodPW + `","new":"password1"}`, 400, "invalid_input", "new", "common"},
		{"new is the account", `{"current":"` + goodPW + `","new":"IVY-GREEN"}`, 400, "invalid_input", "new", "same_as_account"},
		{"unknown field", `{"current":"` + goodPW + `","new":"` + newPW + `","all":true}`, 400, "invalid_input", "all", "unknown_field"},
		{"not a string", `{"current":"` + goodPW + `","new":42}`, 400, "invalid_input", "new", "type"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			r := e.req(t, "POST", "/api/password", tt.body, cookie...)
			if r.status != tt.status || r.errCode() != tt.code || r.errField() != tt.field || r.errRule() != tt.rule {
				t.Fatalf("got %d %s, want %d %s on %q rule %q", r.status, r.raw, tt.status, tt.code, tt.field, tt.rule)
			}
		})
	}
	if r := e.req(t, "POST", "/api/password", `{"current":"x","new":"`+newPW+`"}`); r.status != http.StatusUnauthorized {
		t.Fatalf("password change without a token: %d %s", r.status, r.raw)
	}
	// Nothing changed.
	for _, tok := range []string{here, elsewhere} {
		if got := e.meStatus(t, tok); got != http.StatusOK {
			t.Fatalf("a session after refused changes: /api/me %d", got)
		}
	}

	r := e.req(t, "POST", "/api/password", `{"current":"`+goodPW+`","new":"`+newPW+`"}`, cookie...)
	if r.status != http.StatusOK {
		t.Fatalf("password change: %d %s", r.status, r.raw)
	}
	fresh, _ := r.body["token"].(string)
	if c := r.header.Get("Set-Cookie"); fresh == "" || !strings.Contains(c, chat.TokenCookie+"="+fresh) {
		t.Fatalf("password change Set-Cookie = %q, body %s: want the fresh token", c, r.raw)
	}
	rev := nextUserRevocation(t, events, id)
	if iat := tokenIssuedAt(t, fresh); !iat.After(rev.IssuedThrough) {
		t.Fatalf("the fresh token's iat %v is not after the revocation's %v", iat, rev.IssuedThrough)
	}
	for _, tt := range []struct {
		name string
		tok  string
		want int
	}{
		{"token it was sent with", here, http.StatusUnauthorized},
		{"another session", elsewhere, http.StatusUnauthorized},
		{"fresh token", fresh, http.StatusOK},
	} {
		if got := e.meStatus(t, tt.tok); got != tt.want {
			t.Errorf("%s: /api/me %d, want %d", tt.name, got, tt.want)
		}
	}
	if r := e.login(t, "ivy-green", goodPW); r.status != http.StatusUnauthorized {
		t.Fatalf("login with the old password: %d %s", r.status, r.raw)
	}
	if got := e.meStatus(t, e.mustLogin(t, "ivy-green", newPW)); got != http.StatusOK {
		t.Fatalf("login with the new password: /api/me %d", got)
	}
}

// TestWrongCurrentPasswordIsAFailedLogin: a wrong current password counts
// against the account's login limit, so a stolen session cannot guess the
// password faster than a login can.
func TestWrongCurrentPasswordIsAFailedLogin(t *testing.T) {
	e := startAuth(t, map[string]string{"LOGIN_FAILURES_PER_ACCOUNT": "2"})
	e.register(t, "jack", goodPW, "Jack")
	cookie := []string{"Cookie", chat.TokenCookie + "=" + e.mustLogin(t, "jack", goodPW)}
	guess := func(pw string) response {
		return e.req(t, "POST", "/api/password", `{"current":"`+pw+`","new":"green-lantern-77"}`, cookie...)
	}
	for i := range 2 {
		if r := guess(fmt.Sprint("guess-", i)); r.status != http.StatusForbidden {
			t.Fatalf("guess %d: %d %s", i+1, r.status, r.raw)
		}
	}
	for name, r := range map[string]response{
		"password change": guess(goodPW),
		"login":           e.login(t, "jack", goodPW),
	} {
		if r.status != http.StatusTooManyRequests || r.errCode() != "rate_limited" {
			t.Errorf("%s after 2 wrong current passwords: %d %s, want 429", name, r.status, r.raw)
		}
	}
}
