package authclient

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/poll"
	"github.com/natter/natter/services/token"
)

// fakeAuth answers auth.users.get and auth.keys with auth's request and
// response types from a table (auth itself needs MongoDB), and records
// the ids each lookup asked for.
type fakeAuth struct {
	mu    sync.Mutex
	users map[string]chat.User
	keys  token.JWKS
	fail  bool       // answer lookups with an error
	asked [][]string // ids of each lookup, in order
}

func startAuth(t *testing.T, nc *nats.Conn, users ...chat.User) *fakeAuth {
	t.Helper()
	a := &fakeAuth{users: map[string]chat.User{}}
	for _, u := range users {
		a.users[u.ID] = u
	}
	svc, err := micro.AddService(nc, micro.Config{Name: chat.AuthService, Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	err = errors.Join(
		svc.AddEndpoint("users_get", micro.HandlerFunc(a.usersGet), micro.WithEndpointSubject(chat.AuthUsersGetSubject)),
		svc.AddEndpoint("keys", micro.HandlerFunc(a.keysGet), micro.WithEndpointSubject(chat.AuthKeysSubject)),
	)
	if err != nil {
		t.Fatal(err)
	}
	// The server has the subscriptions before any client asks.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return a
}

func (a *fakeAuth) usersGet(r micro.Request) {
	var req chat.UsersGetRequest
	if err := json.Unmarshal(r.Data(), &req); err != nil || len(req.IDs) > chat.MaxUsersPerRequest {
		_ = r.Error("400", "invalid_input", nil)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asked = append(a.asked, req.IDs)
	if a.fail {
		_ = r.Error("503", "unavailable", nil)
		return
	}
	resp := chat.UsersGetResponse{Users: []chat.User{}}
	for _, id := range req.IDs {
		if u, ok := a.users[id]; ok {
			resp.Users = append(resp.Users, u)
		}
	}
	_ = r.RespondJSON(resp)
}

func (a *fakeAuth) keysGet(r micro.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	_ = r.RespondJSON(a.keys)
}

// lookups returns the ids of each lookup since the last call.
func (a *fakeAuth) lookups() [][]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.asked
	a.asked = nil
	return l
}

func (a *fakeAuth) set(f func(a *fakeAuth)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

func user(id string) chat.User { return chat.User{ID: id, Name: "Name of " + id, Account: id} }

func userIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("u%d", i)
	}
	return ids
}

func sortedKeys(m map[string]chat.User) []string { return slices.Sorted(maps.Keys(m)) }

// newClient starts NATS with a fake auth knowing users, and a client.
func newClient(t *testing.T, cfg Config, users ...chat.User) (*Client, *fakeAuth) {
	t.Helper()
	ns := natstest.Start(t)
	a := startAuth(t, natstest.Connect(t, ns.URL()), users...)
	return New(natstest.Connect(t, ns.URL()), cfg), a
}

func TestUsers(t *testing.T) {
	many := userIDs(2*chat.MaxUsersPerRequest + 50)
	var manyUsers []chat.User
	for _, id := range many {
		manyUsers = append(manyUsers, user(id))
	}
	tests := []struct {
		name      string
		ids       []string
		want      []string // ids found, sorted
		wantAsked [][]string
	}{
		{"known and unknown", []string{"alice", "mallory"}, []string{"alice"}, [][]string{{"alice", "mallory"}}},
		{"invalid ids are not asked", []string{"alice", "a.b", "", "x y", "*"}, []string{"alice"}, [][]string{{"alice"}}},
		{"each id asked once", []string{"bob", "alice", "bob"}, []string{"alice", "bob"}, [][]string{{"bob", "alice"}}},
		{"nothing to ask", []string{"a.b"}, []string{}, nil},
		{"requests of at most MaxUsersPerRequest", many, slices.Sorted(slices.Values(many)),
			[][]string{many[:100], many[100:200], many[200:]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, a := newClient(t, Config{}, append(manyUsers, user("alice"), user("bob"))...)
			got, err := c.Users(context.Background(), tt.ids)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(sortedKeys(got), tt.want) {
				t.Errorf("found %v, want %v", sortedKeys(got), tt.want)
			}
			for id, u := range got {
				if u != user(id) {
					t.Errorf("user %q = %+v, want %+v", id, u, user(id))
				}
			}
			if asked := a.lookups(); !slices.EqualFunc(asked, tt.wantAsked, slices.Equal) {
				t.Errorf("lookups %v, want %v", asked, tt.wantAsked)
			}
		})
	}
}

func TestRemembersFoundUsersOnly(t *testing.T) {
	c, a := newClient(t, Config{}, user("alice"))
	ctx := context.Background()
	if _, err := c.Users(ctx, []string{"alice", "bob"}); err != nil {
		t.Fatal(err)
	}
	a.lookups()
	// bob registers: he is found at once, alice is not asked again.
	a.set(func(a *fakeAuth) { a.users["bob"] = user("bob") })
	got, err := c.Users(ctx, []string{"alice", "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"alice", "bob"}; !slices.Equal(sortedKeys(got), want) {
		t.Errorf("found %v, want %v", sortedKeys(got), want)
	}
	if asked, want := a.lookups(), [][]string{{"bob"}}; !slices.EqualFunc(asked, want, slices.Equal) {
		t.Errorf("lookups %v, want %v", asked, want)
	}
}

func TestForgetsAfterTTL(t *testing.T) {
	c, a := newClient(t, Config{TTL: time.Millisecond}, user("alice"))
	ctx := context.Background()
	if _, err := c.Users(ctx, []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	a.set(func(a *fakeAuth) { a.users["alice"] = chat.User{ID: "alice", Name: "Alice Renamed"} })
	poll.Until(t, 5*time.Second, func() error {
		got, err := c.Users(ctx, []string{"alice"})
		if err != nil || got["alice"].Name != "Alice Renamed" {
			return fmt.Errorf("alice = %+v, %v; want the new name", got["alice"], err)
		}
		return nil
	})
}

func TestRemembersAtMostMaxUsers(t *testing.T) {
	const max = 3
	ids := userIDs(max + 2)
	var users []chat.User
	for _, id := range ids {
		users = append(users, user(id))
	}
	c, a := newClient(t, Config{MaxUsers: max}, users...)
	ctx := context.Background()
	for _, id := range ids {
		if _, err := c.Users(ctx, []string{id}); err != nil {
			t.Fatal(err)
		}
	}
	a.lookups()
	// The oldest two left; the newest are still remembered.
	if _, err := c.Users(ctx, ids); err != nil {
		t.Fatal(err)
	}
	if asked, want := a.lookups(), [][]string{ids[:2]}; !slices.EqualFunc(asked, want, slices.Equal) {
		t.Errorf("lookups %v, want %v", asked, want)
	}
}

func TestAuthUnavailable(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(t *testing.T, a *fakeAuth, stop func())
		wantErr error // nil: any
	}{
		// No responders, or a timeout while the server still routes to
		// the closed connection.
		{"no auth", func(t *testing.T, _ *fakeAuth, stop func()) { stop() }, nil},
		{"error answer", func(t *testing.T, a *fakeAuth, _ func()) { a.set(func(a *fakeAuth) { a.fail = true }) }, natsconn.ErrService},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := natstest.Start(t)
			authConn := natstest.Connect(t, ns.URL())
			a := startAuth(t, authConn, user("alice"), user("bob"))
			c := New(natstest.Connect(t, ns.URL()), Config{Timeout: 500 * time.Millisecond})
			ctx := context.Background()
			if _, err := c.Users(ctx, []string{"alice"}); err != nil {
				t.Fatal(err)
			}
			tt.breakIt(t, a, authConn.Close)
			failed := func(err error) bool { return err != nil && (tt.wantErr == nil || errors.Is(err, tt.wantErr)) }
			got, err := c.Users(ctx, []string{"alice", "bob"})
			if !failed(err) {
				t.Errorf("Users error = %v, want %v", err, tt.wantErr)
			}
			if want := []string{"alice"}; !slices.Equal(sortedKeys(got), want) {
				t.Errorf("found %v with auth unavailable, want the remembered %v", sortedKeys(got), want)
			}
			if ok, err := c.Exists(ctx, "alice"); !ok || err != nil {
				t.Errorf("Exists(alice) = %v, %v; want true from the cache", ok, err)
			}
			if ok, err := c.Exists(ctx, "bob"); ok || !failed(err) {
				t.Errorf("Exists(bob) = %v, %v; want false, %v", ok, err, tt.wantErr)
			}
		})
	}
}

func TestExists(t *testing.T) {
	c, _ := newClient(t, Config{}, user("alice"))
	for id, want := range map[string]bool{"alice": true, "mallory": false, "a.b": false} {
		if got, err := c.Exists(context.Background(), id); got != want || err != nil {
			t.Errorf("Exists(%q) = %v, %v; want %v, nil", id, got, err, want)
		}
	}
}

func newKey(t *testing.T) token.Key {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return token.NewKey(priv)
}

// verifies says whether v accepts a token signed by k.
func verifies(t *testing.T, v *token.Verifier, k token.Key) error {
	t.Helper()
	s, _, err := k.Issue("alice", "Alice", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(s)
	return err
}

func TestKeys(t *testing.T) {
	c, a := newClient(t, Config{KeysRefresh: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v := token.NewVerifier()
	if err := c.FetchKeys(ctx, v); err == nil {
		t.Fatal("FetchKeys of an empty key set succeeded")
	}

	first := newKey(t)
	a.set(func(a *fakeAuth) { a.keys = token.JWKS{Keys: []token.JWK{first.PublicJWK()}} })
	if err := c.FetchKeys(ctx, v); err != nil {
		t.Fatal(err)
	}
	if err := verifies(t, v, first); err != nil {
		t.Fatalf("token of the fetched key: %v", err)
	}

	// Auth rotates its key: RefreshKeys picks the new one up.
	errs := make(chan error, 100)
	go c.RefreshKeys(ctx, v, func(err error) {
		select {
		case errs <- err:
		default:
		}
	})
	second := newKey(t)
	a.set(func(a *fakeAuth) { a.keys = token.JWKS{Keys: []token.JWK{second.PublicJWK()}} })
	poll.Until(t, 5*time.Second, func() error { return verifies(t, v, second) })
	if err := verifies(t, v, first); !errors.Is(err, token.ErrInvalid) {
		t.Errorf("token of the retired key: %v, want %v", err, token.ErrInvalid)
	}

	// Refresh failures are reported and keep the keys.
	a.set(func(a *fakeAuth) { a.keys = token.JWKS{} })
	select {
	case <-errs:
	case <-time.After(5 * time.Second):
		t.Fatal("no refresh failure reported")
	}
	if err := verifies(t, v, second); err != nil {
		t.Errorf("token of the kept key after a failed refresh: %v", err)
	}
}
