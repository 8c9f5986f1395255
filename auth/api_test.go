package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/mongotest"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/poll"
	"github.com/natter/natter/services/servicetest"
	"github.com/natter/natter/services/token"
	"github.com/natter/natter/services/version"
)

// authEnv is auth running on real NATS and FerretDB.
type authEnv struct {
	svc *servicetest.Service
	ns  *natstest.Server
	db  *mongotest.Store
	env map[string]string
}

// cheapArgon keeps most tests fast under -race; TestStoredHash uses the
// real defaults.
var cheapArgon = map[string]string{"ARGON2_MEMORY_KIB": "64", "ARGON2_ITERATIONS": "1"}

func startAuth(t *testing.T, extra ...map[string]string) *authEnv {
	t.Helper()
	e := &authEnv{ns: natstest.Start(t), db: mongotest.Start(t)}
	e.env = map[string]string{
		"NATS_URL": e.ns.URL(), "MONGO_URI": e.db.URI(), "HTTP_ADDR": "127.0.0.1:0",
		"AUTH_SIGNING_KEY_FILE": filepath.Join(t.TempDir(), "key.pem"), "AUTH_GENERATE_SIGNING_KEY": "true",
	}
	for _, m := range append([]map[string]string{cheapArgon}, extra...) {
		for k, v := range m {
			e.env[k] = v
		}
	}
	e.svc = servicetest.Start(t, "auth", run, e.env)
	e.svc.WaitReady(t)
	return e
}

// restart stops auth and starts a new instance on the same NATS and store.
func (e *authEnv) restart(t *testing.T) {
	t.Helper()
	if err := e.svc.Stop(); err != nil {
		t.Fatal(err)
	}
	e.svc = servicetest.Start(t, "auth", run, e.env)
	e.svc.WaitReady(t)
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (r response) errCode() string {
	e, _ := r.body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func (r response) errField() string {
	e, _ := r.body["error"].(map[string]any)
	f, _ := e["field"].(string)
	return f
}

func (r response) errRule() string {
	e, _ := r.body["error"].(map[string]any)
	f, _ := e["rule"].(string)
	return f
}

// req sends one request; headers are name, value pairs.
func (e *authEnv) req(t *testing.T, method, path, body string, headers ...string) response {
	t.Helper()
	r, err := e.do(method, path, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// do is req for any goroutine: it returns its failure rather than ending
// the test.
func (e *authEnv) do(method, path, body string, headers ...string) (response, error) {
	return e.doWith(http.DefaultClient, method, path, body, headers...)
}

// doFrom is do from the loopback address local (127.x.y.z).
func (e *authEnv) doFrom(local, method, path, body string, headers ...string) (response, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	tr := &http.Transport{DialContext: d.DialContext}
	defer tr.CloseIdleConnections()
	return e.doWith(&http.Client{Transport: tr}, method, path, body, headers...)
}

func (e *authEnv) doWith(client *http.Client, method, path, body string, headers ...string) (response, error) {
	r, err := http.NewRequest(method, e.svc.URL+path, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(r)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			return out, fmt.Errorf("%s %s: body is not JSON: %q", method, path, raw)
		}
	}
	return out, nil
}

// burst sends n requests at once, each made by req(i), and counts the
// answers by status.
func (e *authEnv) burst(t *testing.T, n int, req func(i int) (response, error)) map[int]int {
	t.Helper()
	statuses := make(chan int, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			r, err := req(i)
			if err != nil {
				t.Error(err)
				return
			}
			statuses <- r.status
		})
	}
	close(start)
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	return count
}

func (e *authEnv) register(t *testing.T, account, pw, name string) response {
	t.Helper()
	return e.req(t, "POST", "/api/register", fmt.Sprintf(`{"account":%q,"password":%q,"name":%q}`, account, pw, name))
}

func (e *authEnv) login(t *testing.T, account, pw string, headers ...string) response {
	t.Helper()
	return e.req(t, "POST", "/api/login", fmt.Sprintf(`{"account":%q,"password":%q}`, account, pw), headers...)
}

func (e *authEnv) mustLogin(t *testing.T, account, pw string) string {
	t.Helper()
	r := e.login(t, account, pw)
	if r.status != http.StatusOK {
		t.Fatalf("login %s: %d %s", account, r.status, r.raw)
	}
	return r.body["token"].(string)
}

const goodPW = "blue-harbour-42"

func TestRegister(t *testing.T) {
	e := startAuth(t)
	if r := e.register(t, "Alice", goodPW, "  Alice Liddell "); r.status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.status, r.raw)
	} else {
		u := r.body["user"].(map[string]any)
		if u["account"] != "alice" || u["name"] != "Alice Liddell" || chat.ValidID(u["id"].(string)) != nil {
			t.Fatalf("registered user = %v", u)
		}
		if strings.Contains(r.raw, "password") || strings.Contains(r.raw, "argon2") {
			t.Fatalf("register response leaks the password or its hash: %s", r.raw)
		}
	}
	if r := e.register(t, "小明", goodPW, "x"); r.errField() != "account" {
		t.Fatalf("non-ASCII account: %d %s", r.status, r.raw)
	}
	if r := e.register(t, "xiaoming", goodPW, "小明"); r.status != http.StatusCreated {
		t.Fatalf("Chinese name: %d %s", r.status, r.raw)
	}

	long := strings.Repeat("a", 33)
	tests := []struct {
		name, body, code, field, rule string
		status                        int
	}{
		{"taken, other case", `{"account":"ALICE","password":"` + goodPW + `","name":"A"}`, "account_taken", "account", "", 409},
		{"account too short", `{"account":"ab","password":"` + goodPW + `","name":"A"}`, "invalid_input", "account", "length", 400},
		{"account too long", `{"account":"` + long + `","password":"` + goodPW + `","name":"A"}`, "invalid_input", "account", "length", 400},
		{"account with space", `{"account":"a b c","password":"` + goodPW + `","name":"A"}`, "invalid_input", "account", "charset", 400},
		{"account with $", `{"account":"$where","password":"` + goodPW + `","name":"A"}`, "invalid_input", "account", "charset", 400},
		{"account missing", `{"password":"` + goodPW + `","name":"A"}`, "invalid_input", "account", "required", 400},
		{"name blank", `{"account":"bob","password":"` + goodPW + `","name":"   "}`, "invalid_input", "name", "required", 400},
		{"name too long", `{"account":"bob","password":"` + goodPW + `","name":"` + long + `"}`, "invalid_input", "name", "length", 400},
		{"name with control", `{"account":"bob","password":"` + goodPW + `","name":"a\u0007b"}`, "invalid_input", "name", "control", 400},
		{"name with newline", `{"account":"bob","password":"` + goodPW + `","name":"a\nb"}`, "invalid_input", "name", "control", 400},
		{"name with a page label", `{"account":"bob","password":"` + goodPW + `","name":"Bob (you)"}`, "invalid_input", "name", "label", 400},
		{"name with a bidi override", `{"account":"bob","password":"` + goodPW + `","name":"Bob\u202eecila"}`, "invalid_input", "name", "bidi", 400},
		{"name with a zero-width space", `{"account":"bob","password":"` + goodPW + `","name":"Al\u200bice"}`, "invalid_input", "name", "invisible", 400},
		{"name with an at sign", `{"account":"bob","password":"` + goodPW + `","name":"Bob @alice"}`, "invalid_input", "name", "at_sign", 400},
		{"password short", `{"account":"bob","password":"short1!","name":"B"}`, "invalid_input", "password", "length", 400},
		{"password long", `{"account":"bob","password":"` + strings.Repeat("x", 129) + `","name":"B"}`, "invalid_input", "password", "length", 400},
		{"password common", `{"account":"bob","password":"Password123","name":"B"}`, "invalid_input", "password", "common", 400},
		{"password is account", `{"account":"bobbybobby","password":"BobbyBobby","name":"B"}`, "invalid_input", "password", "same_as_account", 400},
		{"operator in account", `{"account":{"$ne":""},"password":"` + goodPW + `","name":"B"}`, "invalid_input", "account", "type", 400},
		{"number as name", `{"account":"bob","password":"` + goodPW + `","name":7}`, "invalid_input", "name", "type", 400},
		{"unknown field", `{"account":"bob","password":"` + goodPW + `","name":"B","admin":true}`, "invalid_input", "admin", "unknown_field", 400},
		{"not JSON", `account=bob`, "invalid_input", "body", "json", 400},
		{"array", `[]`, "invalid_input", "body", "json", 400},
		{"null", `null`, "invalid_input", "account", "required", 400},
		{"trailing data", `{"account":"bob","password":"` + goodPW + `","name":"B"} {}`, "invalid_input", "body", "json", 400},
		{"truncated", `{"account":"bob"`, "invalid_input", "body", "json", 400},
		{"over 16 KiB", `{"account":"bob","password":"` + goodPW + `","name":"` + strings.Repeat("x", 17<<10) + `"}`, "invalid_input", "body", "too_large", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.req(t, "POST", "/api/register", tt.body)
			if r.status != tt.status || r.errCode() != tt.code || r.errField() != tt.field || r.errRule() != tt.rule {
				t.Fatalf("got %d %s, want %d %s on %s, rule %q", r.status, r.raw, tt.status, tt.code, tt.field, tt.rule)
			}
			if msg, _ := r.body["error"].(map[string]any)["message"].(string); msg == "" {
				t.Fatalf("error without message: %s", r.raw)
			}
		})
	}
	t.Run("wrong content type", func(t *testing.T) {
		r := e.req(t, "POST", "/api/register", `{"account":"bob","password":"`+goodPW+`","name":"B"}`, "Content-Type", "text/plain")
		if r.status != 400 || r.errField() != "body" || r.errRule() != "content_type" {
			t.Fatalf("got %d %s", r.status, r.raw)
		}
	})
	// The whole body of an input error.
	r := e.register(t, "bob", "Password123", "B")
	if want := `{"error":{"code":"invalid_input","message":"password: is one of the most common passwords; choose another","field":"password","rule":"common"}}`; r.raw != want {
		t.Fatalf("common password: %s, want %s", r.raw, want)
	}
	// Nothing above created bob.
	if r := e.register(t, "bob", goodPW, "Bob"); r.status != http.StatusCreated {
		t.Fatalf("bob after the bad attempts: %d %s", r.status, r.raw)
	}
}

func TestLogin(t *testing.T) {
	e := startAuth(t)
	if r := e.register(t, "carol", goodPW, "Carol"); r.status != 201 {
		t.Fatal(r.raw)
	}
	r := e.login(t, "CAROL", goodPW)
	if r.status != http.StatusOK {
		t.Fatalf("login: %d %s", r.status, r.raw)
	}
	tok, _ := r.body["token"].(string)
	exp, err := time.Parse(time.RFC3339, fmt.Sprint(r.body["expires_at"]))
	if tok == "" || err != nil || time.Until(exp) < 23*time.Hour || time.Until(exp) > 25*time.Hour {
		t.Fatalf("login body = %s", r.raw)
	}
	if u := r.body["user"].(map[string]any); u["account"] != "carol" || u["name"] != "Carol" {
		t.Fatalf("login user = %v", u)
	}
	cookie := r.header.Get("Set-Cookie")
	for _, want := range []string{chat.TokenCookie + "=" + tok, "HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(cookie, want) {
			t.Errorf("Set-Cookie %q lacks %q", cookie, want)
		}
	}

	wrong := e.login(t, "carol", "not-the-password")
	unknown := e.login(t, "nobody-here", "not-the-password")
	malformed := e.login(t, "no such account!", "not-the-password")
	for _, r := range []response{wrong, unknown, malformed} {
		if r.status != http.StatusUnauthorized || r.errCode() != "bad_credentials" {
			t.Fatalf("failed login = %d %s", r.status, r.raw)
		}
	}
	if wrong.raw != unknown.raw || wrong.raw != malformed.raw {
		t.Fatalf("wrong password and unknown account answer differently:\n%s\n%s\n%s", wrong.raw, unknown.raw, malformed.raw)
	}

	tests := []struct{ name, body, field, rule string }{
		{"operator as account", `{"account":{"$ne":""},"password":"x"}`, "account", "type"},
		{"operator as password", `{"account":"carol","password":{"$ne":""}}`, "password", "type"},
		{"missing account", `{"password":"x"}`, "account", "required"},
		{"missing password", `{"account":"carol"}`, "password", "required"},
		{"unknown field", `{"account":"carol","password":"x","remember":true}`, "remember", "unknown_field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.req(t, "POST", "/api/login", tt.body)
			if r.status != 400 || r.errField() != tt.field || r.errRule() != tt.rule {
				t.Fatalf("got %d %s, want 400 on %s, rule %q", r.status, r.raw, tt.field, tt.rule)
			}
		})
	}
}

func TestSessionEndpoints(t *testing.T) {
	e := startAuth(t)
	e.register(t, "dave", goodPW, "Dave")
	dave := e.register(t, "erin", goodPW, "Erin").body["user"].(map[string]any)["id"].(string)
	tok := e.mustLogin(t, "dave", goodPW)
	daveID := e.req(t, "GET", "/api/me", "", "Authorization", "Bearer "+tok).body["user"].(map[string]any)["id"].(string)

	tests := []struct {
		name    string
		path    string
		headers []string
		status  int
		code    string
	}{
		{"me bearer", "/api/me", []string{"Authorization", "Bearer " + tok}, 200, ""},
		{"me cookie", "/api/me", []string{"Cookie", chat.TokenCookie + "=" + tok}, 200, ""},
		{"me no token", "/api/me", nil, 401, "unauthorized"},
		{"me bad scheme", "/api/me", []string{"Authorization", "Basic " + tok}, 401, "unauthorized"},
		{"me forged", "/api/me", []string{"Authorization", "Bearer " + tok[:len(tok)-4] + "AAAA"}, 401, "unauthorized"},
		{"users", "/api/users?ids=" + dave + "," + daveID, []string{"Authorization", "Bearer " + tok}, 200, ""},
		{"users no token", "/api/users?ids=" + dave, nil, 401, "unauthorized"},
		{"users no ids", "/api/users", []string{"Authorization", "Bearer " + tok}, 400, "invalid_input"},
		{"users bad id", "/api/users?ids=a.b", []string{"Authorization", "Bearer " + tok}, 400, "invalid_input"},
		{"users too many", "/api/users?ids=" + strings.Repeat("a,", 100) + "a", []string{"Authorization", "Bearer " + tok}, 400, "invalid_input"},
		{"unknown path", "/api/nope", nil, 404, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.req(t, "GET", tt.path, "", tt.headers...)
			if r.status != tt.status || r.errCode() != tt.code {
				t.Fatalf("got %d %s, want %d %q", r.status, r.raw, tt.status, tt.code)
			}
		})
	}
	r := e.req(t, "GET", "/api/users?ids="+dave+",unknown,"+daveID, "", "Authorization", "Bearer "+tok)
	if want := fmt.Sprintf(`{"users":[{"id":%q,"name":"Erin","account":"erin"},{"id":%q,"name":"Dave","account":"dave"}]}`, dave, daveID); r.raw != want {
		t.Fatalf("users = %s, want %s (ids, names and accounts only, in order)", r.raw, want)
	}
	// Asked again, from the cache: the same.
	if again := e.req(t, "GET", "/api/users?ids="+dave+",unknown,"+daveID, "", "Authorization", "Bearer "+tok); again.raw != r.raw {
		t.Fatalf("users from the cache = %s, first %s", again.raw, r.raw)
	}
	if r := e.req(t, "DELETE", "/api/me", ""); r.status != http.StatusMethodNotAllowed || r.errCode() != "method_not_allowed" {
		t.Fatalf("DELETE /api/me = %d %s", r.status, r.raw)
	}
}

// TestSession: GET /api/session answers 200 whether or not the request is
// logged in, with the user /api/me returns or null.
func TestSession(t *testing.T) {
	e := startAuth(t)
	e.register(t, "sybil", goodPW, "Sybil")
	e.register(t, "trent", goodPW, "Trent")
	tok := e.mustLogin(t, "sybil", goodPW)
	cookie := chat.TokenCookie + "=" + tok
	me := e.req(t, "GET", "/api/me", "", "Cookie", cookie)
	if me.status != http.StatusOK {
		t.Fatalf("/api/me: %d %s", me.status, me.raw)
	}
	key, _, err := token.LoadOrCreateKeyFile(e.env["AUTH_SIGNING_KEY_FILE"], false)
	if err != nil {
		t.Fatal(err)
	}
	expired, _, err := key.Issue(me.body["user"].(map[string]any)["id"].(string), "Sybil", time.Now().Add(-2*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	const loggedOut = `{"user":null}`

	tests := []struct {
		name    string
		headers []string
		want    string
	}{
		{"no cookie", nil, loggedOut},
		{"cookie", []string{"Cookie", cookie}, me.raw},
		{"bearer", []string{"Authorization", "Bearer " + tok}, me.raw},
		{"garbage cookie", []string{"Cookie", chat.TokenCookie + "=garbage"}, loggedOut},
		{"empty cookie", []string{"Cookie", chat.TokenCookie + "="}, loggedOut},
		{"forged cookie", []string{"Cookie", cookie[:len(cookie)-4] + "AAAA"}, loggedOut},
		{"expired cookie", []string{"Cookie", chat.TokenCookie + "=" + expired}, loggedOut},
		{"garbage bearer", []string{"Authorization", "Bearer garbage"}, loggedOut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.req(t, "GET", "/api/session", "", tt.headers...)
			if r.status != http.StatusOK || r.raw != tt.want {
				t.Fatalf("got %d %s, want 200 %s", r.status, r.raw, tt.want)
			}
			if cc := r.header.Get("Cache-Control"); cc != "no-store" {
				t.Fatalf("Cache-Control = %q, want no-store", cc)
			}
		})
	}

	t.Run("after logout", func(t *testing.T) {
		tok := e.mustLogin(t, "sybil", goodPW)
		if r := e.req(t, "POST", "/api/logout", "{}", "Cookie", chat.TokenCookie+"="+tok); r.status != http.StatusNoContent {
			t.Fatalf("logout: %d %s", r.status, r.raw)
		}
		if r := e.req(t, "GET", "/api/session", "", "Cookie", chat.TokenCookie+"="+tok); r.status != http.StatusOK || r.raw != loggedOut {
			t.Fatalf("revoked token: %d %s, want 200 %s", r.status, r.raw, loggedOut)
		}
		// The other session is untouched.
		if r := e.req(t, "GET", "/api/session", "", "Cookie", cookie); r.status != http.StatusOK || r.raw != me.raw {
			t.Fatalf("other session after logout: %d %s", r.status, r.raw)
		}
	})
	t.Run("user deleted", func(t *testing.T) {
		tok := e.mustLogin(t, "trent", goodPW)
		client, err := mongo.Connect(options.Client().ApplyURI(e.db.URI()))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = client.Disconnect(context.Background()) }()
		if res, err := client.Database("natter").Collection("users").DeleteOne(context.Background(), bson.D{{Key: "account", Value: "trent"}}); err != nil || res.DeletedCount != 1 {
			t.Fatalf("delete trent: %+v %v", res, err)
		}
		if r := e.req(t, "GET", "/api/session", "", "Cookie", chat.TokenCookie+"="+tok); r.status != http.StatusOK || r.raw != loggedOut {
			t.Fatalf("deleted user: %d %s, want 200 %s", r.status, r.raw, loggedOut)
		}
		if r := e.req(t, "GET", "/api/me", "", "Cookie", chat.TokenCookie+"="+tok); r.status != http.StatusUnauthorized {
			t.Fatalf("/api/me of a deleted user: %d %s, want 401", r.status, r.raw)
		}
	})
	if r := e.req(t, "POST", "/api/session", ""); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("POST /api/session = %d %s", r.status, r.raw)
	}
}

func TestLogoutRevokes(t *testing.T) {
	e := startAuth(t)
	e.register(t, "frank", goodPW, "Frank")
	tok := e.mustLogin(t, "frank", goodPW)
	other := e.mustLogin(t, "frank", goodPW) // a second session stays valid

	nc := natstest.Connect(t, e.ns.URL())
	events := make(chan *nats.Msg, 4)
	sub, err := nc.ChanSubscribe(chat.AuthRevokedSubject, events)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	if r := e.req(t, "POST", "/api/logout", "{}", "Cookie", chat.TokenCookie+"="+tok); r.status != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.status, r.raw)
	} else if c := r.header.Get("Set-Cookie"); !strings.Contains(c, chat.TokenCookie+"=;") || !strings.Contains(c, "Max-Age=0") {
		t.Fatalf("logout Set-Cookie = %q, want the cookie cleared", c)
	}
	select {
	case m := <-events:
		var rev chat.Revocation
		if err := json.Unmarshal(m.Data, &rev); err != nil || rev.TokenID == "" || rev.User == "" || rev.ExpiresAt.Before(time.Now()) {
			t.Fatalf("revocation event = %s (%v)", m.Data, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event on " + chat.AuthRevokedSubject)
	}
	check := func(when string) {
		if r := e.req(t, "GET", "/api/me", "", "Authorization", "Bearer "+tok); r.status != 401 {
			t.Fatalf("revoked token %s: %d %s", when, r.status, r.raw)
		}
		if r := e.req(t, "POST", "/api/logout", "{}", "Authorization", "Bearer "+tok); r.status != 401 {
			t.Fatalf("second logout %s: %d", when, r.status)
		}
		if r := e.req(t, "GET", "/api/me", "", "Authorization", "Bearer "+other); r.status != 200 {
			t.Fatalf("other session %s: %d %s", when, r.status, r.raw)
		}
	}
	check("after logout")
	e.restart(t)
	check("after auth restart")
}

// TestOtherOriginsCannotChangeState: register, login, logout, logout-all
// and password refuse a browser request from a page of another origin (another port of the
// same host included: the no-cors POST that logged a user out) with 403
// forbidden_origin, and logout takes only a JSON body.
func TestOtherOriginsCannotChangeState(t *testing.T) {
	e := startAuth(t)
	e.register(t, "walter", goodPW, "Walter")
	self := e.svc.URL // auth reached directly: its own origin
	otherPort := "http://127.0.0.1:1"
	login := func() string { return chat.TokenCookie + "=" + e.mustLogin(t, "walter", goodPW) }
	cookie := login()

	refused := []struct {
		name    string
		headers []string
	}{
		{"same site, other port", []string{"Sec-Fetch-Site", "same-site", "Origin", otherPort}},
		{"cross site", []string{"Sec-Fetch-Site", "cross-site", "Origin", "http://evil.example"}},
		{"same site, other port, old browser", []string{"Origin", otherPort}},
		{"other host, old browser", []string{"Origin", "http://evil.example"}},
		{"null origin", []string{"Origin", "null"}},
		{"unparsable origin", []string{"Origin", "::"}},
		{"host named by an untrusted peer", []string{"Origin", "http://chat.example", "X-Forwarded-Host", "chat.example"}},
	}
	for _, path := range []string{"/api/register", "/api/login", "/api/logout", "/api/logout-all", "/api/password"} {
		body := map[string]string{
			"/api/register":   `{"account":"xavier","password":"` + goodPW + `","name":"X"}`,
			"/api/login":      `{"account":"walter","password":"` + goodPW + `"}`,
			"/api/logout":     `{}`,
			"/api/logout-all": `{}`,
			"/api/password":   `{"current":"` + goodPW + `","new":"green-lantern-77"}`,
		}[path]
		for _, tt := range refused {
			t.Run(path+" "+tt.name, func(t *testing.T) {
				r := e.req(t, "POST", path, body, append([]string{"Cookie", cookie}, tt.headers...)...)
				if r.status != http.StatusForbidden || r.errCode() != "forbidden_origin" {
					t.Fatalf("got %d %s, want 403 forbidden_origin", r.status, r.raw)
				}
			})
		}
	}
	// Nothing happened: still logged in, xavier not registered, no cookie set.
	if r := e.req(t, "GET", "/api/session", "", "Cookie", cookie); r.body["user"] == nil {
		t.Fatalf("session after refused logouts: %s", r.raw)
	}
	// The attack itself: a no-cors POST can only carry a "simple" content type.
	for _, path := range []string{"/api/logout", "/api/logout-all"} {
		for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", ""} {
			r := e.req(t, "POST", path, "{}", "Cookie", cookie, "Sec-Fetch-Site", "same-site", "Origin", otherPort, "Content-Type", ct)
			if r.status != http.StatusForbidden {
				t.Fatalf("no-cors %s from another port, Content-Type %q: %d %s", path, ct, r.status, r.raw)
			}
			// Even from the page itself, they take JSON only.
			r = e.req(t, "POST", path, "{}", "Cookie", cookie, "Sec-Fetch-Site", "same-origin", "Content-Type", ct)
			if r.status != http.StatusBadRequest || r.errRule() != "content_type" {
				t.Fatalf("%s with Content-Type %q: %d %s, want 400 content_type", path, ct, r.status, r.raw)
			}
		}
		for _, body := range []string{`{"all":true}`, `[]`, ``} {
			if r := e.req(t, "POST", path, body, "Cookie", cookie, "Content-Type", "application/json"); r.status != http.StatusBadRequest {
				t.Fatalf("%s with body %q: %d %s, want 400", path, body, r.status, r.raw)
			}
		}
	}
	if r := e.req(t, "GET", "/api/session", "", "Cookie", cookie); r.body["user"] == nil {
		t.Fatalf("session after refused logouts: %s", r.raw)
	}

	allowed := []struct {
		name    string
		headers []string
	}{
		{"same origin", []string{"Sec-Fetch-Site", "same-origin", "Origin", self}},
		{"user's own navigation", []string{"Sec-Fetch-Site", "none"}},
		{"own origin, old browser", []string{"Origin", self}},
		{"own origin, other case", []string{"Origin", strings.ToUpper(self)}},
		{"no browser", nil},
	}
	for i, tt := range allowed {
		t.Run("allowed "+tt.name, func(t *testing.T) {
			if r := e.req(t, "POST", "/api/register", fmt.Sprintf(`{"account":"yolanda%d","password":%q,"name":"Y"}`, i, goodPW), tt.headers...); r.status != http.StatusCreated {
				t.Fatalf("register: %d %s", r.status, r.raw)
			}
			if r := e.req(t, "POST", "/api/login", fmt.Sprintf(`{"account":"yolanda%d","password":%q}`, i, goodPW), tt.headers...); r.status != http.StatusOK {
				t.Fatalf("login: %d %s", r.status, r.raw)
			}
			c := login()
			if r := e.req(t, "POST", "/api/logout", "{}", append([]string{"Cookie", c}, tt.headers...)...); r.status != http.StatusNoContent {
				t.Fatalf("logout: %d %s", r.status, r.raw)
			}
		})
	}
	if r := e.register(t, "xavier", goodPW, "X"); r.status != http.StatusCreated {
		t.Fatalf("xavier after the refused registrations: %d %s", r.status, r.raw)
	}
}

// TestOriginBehindTheGateway: behind a trusted proxy (the gateway), the
// origin to match is the host the browser asked the gateway for, which the
// proxy reports in X-Forwarded-Host.
func TestOriginBehindTheGateway(t *testing.T) {
	e := startAuth(t, map[string]string{"TRUSTED_PROXIES": "127.0.0.1"})
	tests := []struct {
		origin, forwardedHost string
		status                int
	}{
		{"http://chat.example:8080", "chat.example:8080", http.StatusCreated},
		{"https://chat.example", "chat.example", http.StatusCreated},
		{"http://chat.example:9090", "chat.example:8080", http.StatusForbidden},
		{"http://chat.example", "chat.example:8080", http.StatusForbidden},
		{"http://chat.example", "", http.StatusForbidden}, // no header: auth's own host
	}
	for i, tt := range tests {
		h := []string{"Origin", tt.origin}
		if tt.forwardedHost != "" {
			h = append(h, "X-Forwarded-Host", tt.forwardedHost)
		}
		r := e.req(t, "POST", "/api/register", fmt.Sprintf(`{"account":"zed%d","password":%q,"name":"Z"}`, i, goodPW), h...)
		if r.status != tt.status {
			t.Errorf("Origin %s, X-Forwarded-Host %q: %d %s, want %d", tt.origin, tt.forwardedHost, r.status, r.raw, tt.status)
		}
	}
}

// TestAPIAnswerHeaders: every /api answer, success or error, is marked
// nosniff and no-store.
func TestAPIAnswerHeaders(t *testing.T) {
	e := startAuth(t)
	e.register(t, "uma", goodPW, "Uma")
	cookie := chat.TokenCookie + "=" + e.mustLogin(t, "uma", goodPW)
	tests := []struct {
		method, path, body string
		headers            []string
		status             int
	}{
		{"POST", "/api/register", `{"account":"ursula","password":"` + goodPW + `","name":"U"}`, nil, 201},
		{"POST", "/api/register", `{"account":"u"}`, nil, 400},
		{"POST", "/api/login", `{"account":"uma","password":"` + goodPW + `"}`, nil, 200},
		{"POST", "/api/login", `{"account":"uma","password":"wrong-password"}`, nil, 401},
		{"POST", "/api/login", `{"account":"uma","password":"wrong-password"}`, []string{"Origin", "http://evil.example"}, 403},
		{"GET", "/api/session", "", nil, 200},
		{"GET", "/api/me", "", []string{"Cookie", cookie}, 200},
		{"GET", "/api/me", "", nil, 401},
		{"GET", "/api/users?ids=a.b", "", []string{"Cookie", cookie}, 400},
		{"GET", "/api/nope", "", nil, 404},
		{"DELETE", "/api/me", "", nil, 405},
		{"POST", "/api/logout", "{}", []string{"Cookie", cookie}, 204},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %s %d", tt.method, tt.path, tt.status), func(t *testing.T) {
			r := e.req(t, tt.method, tt.path, tt.body, tt.headers...)
			if r.status != tt.status {
				t.Fatalf("got %d %s, want %d", r.status, r.raw, tt.status)
			}
			if got := r.header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
			}
			if got := r.header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", got)
			}
		})
	}
}

// TestSlowRequestCutOff: a client that sends its headers and then trickles
// (here: withholds) its body holds its connection for HTTP_READ_TIMEOUT at
// most.
func TestSlowRequestCutOff(t *testing.T) {
	e := startAuth(t, map[string]string{"HTTP_READ_TIMEOUT": "1s"})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.svc.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /api/login HTTP/1.1\r\nHost: auth\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"acc"); err != nil {
		t.Fatal(err)
	}
	// The test's own bound, far above the server's: reaching it means the
	// server never cut the client off.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("server kept a withheld body's connection open: %v (read %q)", err, got)
	}
	if len(got) > 0 && !strings.HasPrefix(string(got), "HTTP/1.1 400") {
		t.Fatalf("answer to a withheld body: %q, want a 400 or nothing", got)
	}
}

func TestConcurrentRegisterOneWins(t *testing.T) {
	e := startAuth(t, map[string]string{"TRUSTED_PROXIES": "127.0.0.1"})
	variants := []string{"grace", "Grace", "GRACE", "gRaCe", "GrAcE"}
	results := make(chan int, 50)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			// Distinct client addresses, so the per-address limit is not what stops them.
			addr := fmt.Sprintf("127.0.%d.%d", i/200, i%200+1)
			r := e.req(t, "POST", "/api/register", fmt.Sprintf(`{"account":%q,"password":%q,"name":"G"}`, variants[i%len(variants)], goodPW), "X-Forwarded-For", addr)
			results <- r.status
		})
	}
	wg.Wait()
	close(results)
	count := map[int]int{}
	for s := range results {
		count[s]++
	}
	if count[201] != 1 || count[409] != 49 {
		t.Fatalf("50 concurrent registers of one account: %v, want exactly one 201 and 49 409", count)
	}
}

func TestRateLimits(t *testing.T) {
	e := startAuth(t, map[string]string{
		"LOGIN_FAILURES_PER_ACCOUNT": "3", "LOGIN_FAILURES_PER_ADDRESS": "5", "REGISTRATIONS_PER_ADDRESS": "4",
		"TRUSTED_PROXIES": "127.0.0.1", // the test's client is its gateway
	})
	e.register(t, "heidi", goodPW, "Heidi")
	e.register(t, "ivan", goodPW, "Ivan")
	attacker := []string{"X-Forwarded-For", "127.0.1.1"}
	owner := []string{"X-Forwarded-For", "127.0.1.2"}

	for i := range 3 {
		if r := e.login(t, "heidi", "guess-"+fmt.Sprint(i), attacker...); r.status != 401 {
			t.Fatalf("failure %d: %d %s", i+1, r.status, r.raw)
		}
	}
	r := e.login(t, "heidi", goodPW, attacker...)
	if r.status != http.StatusTooManyRequests || r.errCode() != "rate_limited" {
		t.Fatalf("4th attempt on a locked account from the attacking address: %d %s", r.status, r.raw)
	}
	if ra := r.header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Fatalf("429 without Retry-After: %q", ra)
	}
	// The owner, from another address, still logs in.
	if r := e.login(t, "heidi", goodPW, owner...); r.status != 200 {
		t.Fatalf("owner locked out by the attacker: %d %s", r.status, r.raw)
	}
	// Other accounts from the attacking address until its own limit (5).
	if r := e.login(t, "ivan", "wrong-one", attacker...); r.status != 401 {
		t.Fatalf("ivan from attacker: %d %s", r.status, r.raw)
	}
	// heidi's success above reset her account count; address count is 4.
	if r := e.login(t, "ivan", "wrong-two", attacker...); r.status != 401 {
		t.Fatalf("5th failure: %d %s", r.status, r.raw)
	}
	if r := e.login(t, "ivan", goodPW, attacker...); r.status != http.StatusTooManyRequests {
		t.Fatalf("address over its limit: %d %s", r.status, r.raw)
	}
	if r := e.login(t, "ivan", goodPW, owner...); r.status != 200 {
		t.Fatalf("ivan from a clean address: %d %s", r.status, r.raw)
	}

	// Registrations per address. Two were made from 127.0.0.1 above.
	for i := range 2 {
		if r := e.register(t, fmt.Sprintf("judy%d", i), goodPW, "J"); r.status != 201 {
			t.Fatalf("registration %d: %d %s", i+3, r.status, r.raw)
		}
	}
	if r := e.register(t, "judy9", goodPW, "J"); r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("5th registration from one address: %d %s", r.status, r.raw)
	}
}

// TestConcurrentLoginsCannotRaceTheLimits: an attempt takes its place
// under the limits before its password is hashed, so a burst of wrong
// logins gets its passwords checked at most the limit's number of times,
// however many arrive at once.
func TestConcurrentLoginsCannotRaceTheLimits(t *testing.T) {
	const burst, perAccount, perAddress = 150, 10, 20
	e := startAuth(t, map[string]string{
		"LOGIN_FAILURES_PER_ACCOUNT": fmt.Sprint(perAccount), "LOGIN_FAILURES_PER_ADDRESS": fmt.Sprint(perAddress),
		"HASH_WORKERS": "2", "TRUSTED_PROXIES": "127.0.0.1",
	})
	e.register(t, "heidi", goodPW, "Heidi")
	tests := []struct {
		name    string
		limit   int
		account func(i int) string
		addr    string
	}{
		// The address's own limit is not reached: the account's stops them.
		{"one account", perAccount, func(int) string { return "heidi" }, "192.0.2.1"},
		{"one address", perAddress, func(i int) string { return fmt.Sprintf("user%d", i) }, "192.0.2.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			count := e.burst(t, burst, func(i int) (response, error) {
				return e.do("POST", "/api/login", fmt.Sprintf(`{"account":%q,"password":"guess-%d"}`, tt.account(i), i), "X-Forwarded-For", tt.addr)
			})
			t.Logf("%d wrong logins at once: %d checked (401), %d refused (429), limit %d", burst, count[401], count[429], tt.limit)
			if count[401] > tt.limit || count[401]+count[429] != burst {
				t.Fatalf("%d wrong logins at once: %v; want at most %d checked (401), the rest 429", burst, count, tt.limit)
			}
		})
	}
	// The attacking address is locked out of heidi, even with her password;
	// she, from elsewhere, is not.
	if r := e.login(t, "heidi", goodPW, "X-Forwarded-For", "192.0.2.1"); r.status != http.StatusTooManyRequests {
		t.Fatalf("heidi from the attacking address: %d %s", r.status, r.raw)
	}
	if r := e.login(t, "heidi", goodPW, "X-Forwarded-For", "192.0.2.3"); r.status != http.StatusOK {
		t.Fatalf("heidi from her own address: %d %s", r.status, r.raw)
	}
}

// TestGoodLoginsAreNoFailures: an attempt is counted before its password
// is checked and given back when it was right, so an address (a household
// behind one router) can log in any number of times.
func TestGoodLoginsAreNoFailures(t *testing.T) {
	e := startAuth(t, map[string]string{"LOGIN_FAILURES_PER_ADDRESS": "2", "LOGIN_FAILURES_PER_ACCOUNT": "2"})
	e.register(t, "rupert", goodPW, "Rupert")
	for i := range 5 {
		if r := e.login(t, "rupert", goodPW); r.status != http.StatusOK {
			t.Fatalf("good login %d: %d %s", i+1, r.status, r.raw)
		}
	}
	for i := range 2 {
		if r := e.login(t, "rupert", "wrong-password"); r.status != http.StatusUnauthorized {
			t.Fatalf("failure %d after good logins: %d %s", i+1, r.status, r.raw)
		}
	}
	if r := e.login(t, "rupert", goodPW); r.status != http.StatusTooManyRequests {
		t.Fatalf("third attempt after two failures: %d %s", r.status, r.raw)
	}
}

// TestForwardedForTrustedFromNoOneByDefault: auth trusts no proxy unless
// told, so a client that reaches it directly, even on loopback, can neither
// escape its address's limit by naming other addresses nor lock another
// address out by naming it.
func TestForwardedForTrustedFromNoOneByDefault(t *testing.T) {
	e := startAuth(t, map[string]string{"LOGIN_FAILURES_PER_ADDRESS": "2"})
	e.register(t, "victor", goodPW, "Victor")
	for i := range 2 {
		if r := e.login(t, "nobody-"+fmt.Sprint(i), "wrong-password", "X-Forwarded-For", "127.0.2.1", "X-Real-IP", "127.0.2.1"); r.status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d %s", i+1, r.status, r.raw)
		}
	}
	if r := e.login(t, "nobody-x", "wrong-password", "X-Forwarded-For", "127.0.2.9"); r.status != http.StatusTooManyRequests {
		t.Fatalf("another X-Forwarded-For escaped the address limit: %d %s", r.status, r.raw)
	}
	// Both failures named 127.0.2.1: the real 127.0.2.1 is not locked out.
	r, err := e.doFrom("127.0.2.1", "POST", "/api/login", fmt.Sprintf(`{"account":"victor","password":%q}`, goodPW))
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusOK {
		t.Fatalf("login from an address others named in X-Forwarded-For: %d %s", r.status, r.raw)
	}
}

// TestIPv6ClientsCountPerSlash64: every address of one /64 is one client
// for the limits; the next /64 is another.
func TestIPv6ClientsCountPerSlash64(t *testing.T) {
	e := startAuth(t, map[string]string{"LOGIN_FAILURES_PER_ADDRESS": "3", "TRUSTED_PROXIES": "127.0.0.1"})
	for i, addr := range []string{"2001:db8:1:2::1", "2001:db8:1:2:aaaa::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"} {
		if r := e.login(t, "nobody-"+fmt.Sprint(i), "wrong-password", "X-Forwarded-For", addr); r.status != http.StatusUnauthorized {
			t.Fatalf("failure %d from %s: %d %s", i+1, addr, r.status, r.raw)
		}
	}
	tests := []struct {
		addr   string
		status int
	}{
		{"2001:db8:1:2::99", http.StatusTooManyRequests},
		{"2001:DB8:1:2:0:0:0:1", http.StatusTooManyRequests},
		{"2001:db8:1:3::1", http.StatusUnauthorized},
		{"2001:db8:1:1:ffff::1", http.StatusUnauthorized},
		{"192.0.2.1", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		if r := e.login(t, "nobody-x", "wrong-password", "X-Forwarded-For", tt.addr); r.status != tt.status {
			t.Errorf("from %s after 3 failures in 2001:db8:1:2::/64: %d %s, want %d", tt.addr, r.status, r.raw, tt.status)
		}
	}
}

func TestStoredHash(t *testing.T) {
	e := startAuth(t, map[string]string{"ARGON2_MEMORY_KIB": "19456", "ARGON2_ITERATIONS": "2"})
	if r := e.register(t, "mallory", goodPW, "M"); r.status != 201 {
		t.Fatal(r.raw)
	}
	client, err := mongo.Connect(options.Client().ApplyURI(e.db.URI()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Disconnect(context.Background()) }()
	var doc bson.M
	if err := client.Database("natter").Collection("users").FindOne(context.Background(), bson.D{{Key: "account", Value: "mallory"}}).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	hash, _ := doc["password_hash"].(string)
	if !regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`).MatchString(hash) {
		t.Fatalf("stored hash %q is not argon2id PHC with OWASP parameters", hash)
	}
	for k, v := range doc {
		if s, ok := v.(string); ok && strings.Contains(s, goodPW) {
			t.Fatalf("field %s holds the password", k)
		}
	}
	e.mustLogin(t, "mallory", goodPW)
}

func TestMongoDown(t *testing.T) {
	e := startAuth(t)
	e.register(t, "niaj", goodPW, "Niaj")
	tok := e.mustLogin(t, "niaj", goodPW)
	e.db.Stop()
	// A valid token whose user cannot be looked up is not "logged out".
	if r := e.req(t, "GET", "/api/session", "", "Cookie", chat.TokenCookie+"="+tok); r.status != http.StatusServiceUnavailable || r.errCode() != "unavailable" || r.header.Get("Retry-After") == "" {
		t.Fatalf("/api/session with MongoDB down: %d %s", r.status, r.raw)
	}
	// Without a token there is nothing to look up.
	if r := e.req(t, "GET", "/api/session", ""); r.status != http.StatusOK || r.raw != `{"user":null}` {
		t.Fatalf("/api/session without a token, MongoDB down: %d %s", r.status, r.raw)
	}
	r := e.login(t, "niaj", goodPW)
	if r.status != http.StatusServiceUnavailable || r.errCode() != "unavailable" {
		t.Fatalf("login with MongoDB down: %d %s", r.status, r.raw)
	}
	if r := e.register(t, "olivia", goodPW, "O"); r.status != http.StatusServiceUnavailable || r.errCode() != "unavailable" {
		t.Fatalf("register with MongoDB down: %d %s", r.status, r.raw)
	}
	servicetest.WaitStatus(t, e.svc.URL+"/readyz", 503, 10*time.Second)
	e.db.Restart(t)
	poll.Until(t, 30*time.Second, func() error {
		if r := e.login(t, "niaj", goodPW); r.status != 200 {
			return fmt.Errorf("login after MongoDB came back: %d %s", r.status, r.raw)
		}
		return nil
	})
	e.svc.WaitReady(t)
}

func TestMicroEndpoints(t *testing.T) {
	e := startAuth(t)
	e.register(t, "Peggy", goodPW, "佩吉")
	tok := e.mustLogin(t, "peggy", goodPW)
	nc := natstest.Connect(t, e.ns.URL())

	m, err := nc.Request(chat.AuthKeysSubject, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var jwks token.JWKS
	if err := json.Unmarshal(m.Data, &jwks); err != nil || len(jwks.Keys) != 1 || jwks.Keys[0].KeyType != "OKP" {
		t.Fatalf("auth.keys = %s (%v)", m.Data, err)
	}
	if strings.Contains(string(m.Data), `"d"`) {
		t.Fatalf("auth.keys leaks private key material: %s", m.Data)
	}
	// A verifier built from the keys alone accepts auth's token.
	v := token.NewVerifier()
	if err := v.SetKeys(jwks); err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(tok)
	// The token names the account handle, lowercased, for the gateway
	// to stamp beside the name.
	if err != nil || claims.Name != "佩吉" || claims.Account != "peggy" {
		t.Fatalf("verify with auth.keys: %+v %v", claims, err)
	}

	m, err = nc.Request(chat.AuthUsersGetSubject, []byte(`{"ids":["`+claims.Subject+`","nobody"]}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"users":[{"id":"` + claims.Subject + `","name":"佩吉","account":"peggy"}]}`
	if string(m.Data) != want {
		t.Fatalf("auth.users.get = %s, want %s", m.Data, want)
	}
	// Asked again, from the cache: the same.
	if m, err := nc.Request(chat.AuthUsersGetSubject, []byte(`{"ids":["`+claims.Subject+`"]}`), 5*time.Second); err != nil || string(m.Data) != want {
		t.Fatalf("auth.users.get again = %v %v, want %s", m, err, want)
	}
	// nats micro info auth: the version it was built from (a test binary
	// is built inside the repository, so the development one).
	subject, _ := micro.ControlSubject(micro.InfoVerb, chat.AuthService, "")
	m, err = nc.Request(subject, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(m.Data, &info); err != nil || info.Version != version.Devel {
		t.Fatalf("%s = %s (%v), want version %q", subject, m.Data, err, version.Devel)
	}
	for _, bad := range []string{`{"ids":["a.b"]}`, `{"ids":"x"}`, `not json`, `{"ids":[],"x":1}`} {
		m, err := nc.Request(chat.AuthUsersGetSubject, []byte(bad), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get("Nats-Service-Error-Code") != "400" {
			t.Fatalf("auth.users.get %s: headers %v body %s, want error code 400", bad, m.Header, m.Data)
		}
	}
}

// Someone who just registered or logged in is named by auth.users.get
// without a read of the store: presence asks for the names of everyone
// who comes online, and in a connect storm those reads were the stack's
// CPU. With the store down, only users remembered that way are found.
func TestJustLoggedInNamedWithoutTheStore(t *testing.T) {
	e := startAuth(t)
	ids := map[string]string{}
	for _, account := range []string{"rupert", "sybil"} {
		r := e.register(t, account, goodPW, strings.ToUpper(account))
		var body struct{ User struct{ ID string } }
		if err := json.Unmarshal([]byte(r.raw), &body); err != nil || body.User.ID == "" {
			t.Fatalf("register %s: %d %s", account, r.status, r.raw)
		}
		ids[account] = body.User.ID
	}
	e.restart(t) // forgets both
	e.mustLogin(t, "rupert", goodPW)
	e.db.Stop()
	nc := natstest.Connect(t, e.ns.URL())
	ask := func(id string) string {
		// An id not remembered waits out the driver's server selection.
		m, err := nc.Request(chat.AuthUsersGetSubject, []byte(`{"ids":["`+id+`"]}`), 15*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return string(m.Data)
	}
	want := `{"users":[{"id":"` + ids["rupert"] + `","name":"RUPERT","account":"rupert"}]}`
	if got := ask(ids["rupert"]); got != want {
		t.Fatalf("a user who just logged in, store down: %s, want %s", got, want)
	}
	if got := ask(ids["sybil"]); strings.Contains(got, "SYBIL") {
		t.Fatalf("a user not seen since the restart was named with the store down: %s", got)
	}
}
