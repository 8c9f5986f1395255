package users

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/mongotest"
)

func newStore(t testing.TB) *Store {
	t.Helper()
	db := mongotest.Start(t)
	client, err := mongo.Connect(options.Client().ApplyURI(db.URI()).SetTimeout(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	s := New(client.Database("natter_test"))
	if err := s.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureIndexes(context.Background()); err != nil {
		t.Fatalf("second EnsureIndexes: %v", err)
	}
	return s
}

func TestCreateAndFind(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	u := User{ID: NewID(), Account: "alice", Name: "Alice", PasswordHash: "$argon2id$x", Created: time.Now().UTC().Truncate(time.Millisecond)}
	if err := s.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, User{ID: NewID(), Account: "alice"}); !errors.Is(err, ErrAccountTaken) {
		t.Fatalf("duplicate account: %v, want ErrAccountTaken", err)
	}
	got, err := s.ByAccount(ctx, "alice")
	if err != nil || got != u {
		t.Fatalf("ByAccount = %+v, %v; want %+v", got, err, u)
	}
	if got, err := s.ByID(ctx, u.ID); err != nil || got.Account != "alice" {
		t.Fatalf("ByID = %+v, %v", got, err)
	}
	if _, err := s.ByAccount(ctx, "bob"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown account: %v", err)
	}
	b := User{ID: NewID(), Account: "bob", Name: "Bob"}
	if err := s.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	// A few ids and more than byIDEachMax: the two ways of asking.
	many := []string{b.ID, "nobody", u.ID, b.ID}
	for i := 0; len(many) <= byIDEachMax; i++ {
		many = append(many, fmt.Sprintf("absent%d", i))
	}
	for _, ask := range [][]string{{b.ID, "nobody", u.ID, b.ID}, many} {
		list, err := s.ByIDs(ctx, ask)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, x := range list {
			ids = append(ids, x.ID)
			if x.PasswordHash != "" {
				t.Errorf("ByIDs returned a password hash")
			}
			if x.Name == "" {
				t.Errorf("ByIDs returned %s without its name", x.ID)
			}
		}
		if !slices.Equal(ids, []string{b.ID, u.ID}) {
			t.Fatalf("ByIDs(%d ids) order = %v, want [%s %s]", len(ask), ids, b.ID, u.ID)
		}
	}
}

func TestSetPasswordHash(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	u := User{ID: NewID(), Account: "carol", Name: "Carol", PasswordHash: "$argon2id$old"}
	other := User{ID: NewID(), Account: "dan", Name: "Dan", PasswordHash: "$argon2id$dan"}
	for _, x := range []User{u, other} {
		if err := s.Create(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		id      string
		wantErr error
	}{
		{"existing user", u.ID, nil},
		{"unknown user", "nobody", ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.SetPasswordHash(ctx, tt.id, "$argon2id$new"); !errors.Is(err, tt.wantErr) {
				t.Fatalf("SetPasswordHash = %v, want %v", err, tt.wantErr)
			}
		})
	}
	if got, err := s.ByID(ctx, u.ID); err != nil || got.PasswordHash != "$argon2id$new" || got.Account != "carol" || got.Name != "Carol" {
		t.Fatalf("after the change: %+v, %v", got, err)
	}
	if got, err := s.ByID(ctx, other.ID); err != nil || got.PasswordHash != "$argon2id$dan" {
		t.Fatalf("another user after the change: %+v, %v", got, err)
	}
}

func TestNewIDIsSubjectSafe(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if err := chat.ValidID(id); err != nil {
			t.Fatal(err)
		}
		if seen[id] {
			t.Fatalf("id %s repeated", id)
		}
		seen[id] = true
	}
}
