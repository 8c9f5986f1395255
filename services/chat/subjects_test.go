package chat

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"lobby", true},
		{"u_9f8A-x", true},
		{strings.Repeat("a", MaxIDLen), true},
		{"", false},
		{strings.Repeat("a", MaxIDLen+1), false},
		{"a.b", false},
		{"a*", false},
		{">", false},
		{"a b", false},
		{"a\tb", false},
		{"a/b", false},
		{"é", false},
		{"a\x00", false},
	}
	for _, tt := range tests {
		err := ValidID(tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("ValidID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidID) {
			t.Errorf("ValidID(%q) error %v is not ErrInvalidID", tt.id, err)
		}
	}
}

func TestSubjectBuilders(t *testing.T) {
	tests := []struct {
		name    string
		build   func() (string, error)
		want    string
		wantErr string
	}{
		{"room", func() (string, error) { return RoomSubject("lobby") }, "chat.room.lobby", ""},
		{"room wildcard", func() (string, error) { return RoomSubject(">") }, "", "room: invalid id"},
		{"room extra token", func() (string, error) { return RoomSubject("lobby.x") }, "", "room: invalid id"},
		{"dm sorted", func() (string, error) { return DMSubject("bob", "alice") }, "chat.dm.alice.bob", ""},
		{"dm same either way", func() (string, error) { return DMSubject("alice", "bob") }, "chat.dm.alice.bob", ""},
		{"dm self", func() (string, error) { return DMSubject("alice", "alice") }, "chat.dm.alice.alice", ""},
		{"dm wildcard", func() (string, error) { return DMSubject("alice", "*") }, "", "user: invalid id"},
		{"dm empty", func() (string, error) { return DMSubject("", "bob") }, "", "user: invalid id: empty"},
		{"presence key", func() (string, error) { return PresenceKey("u1", "gw1", "c1") }, "u1.gw1.c1", ""},
		{"presence key bad gateway", func() (string, error) { return PresenceKey("u1", "gw 1", "c1") }, "", "gateway: invalid id"},
		{"presence key bad conn", func() (string, error) { return PresenceKey("u1", "gw1", "c.1") }, "", "conn: invalid id"},
		{"revoked user key", func() (string, error) { return RevokedUserKey("u1") }, "user.u1", ""},
		{"revoked user key wildcard", func() (string, error) { return RevokedUserKey("u1.>") }, "", "user: invalid id"},
		{"presence gateway key", func() (string, error) { return PresenceGatewayKey("gw1") }, "gateway/gw1", ""},
		{"presence gateway key bad id", func() (string, error) { return PresenceGatewayKey("gw.1") }, "", "gateway: invalid id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.build()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestRevokedKeyUser(t *testing.T) {
	tests := []struct {
		key, user string
		ok        bool
	}{
		{"user.u1", "u1", true},
		{"Zx9-_aQ3bcdefghijklmnp", "", false}, // a token id
		{"user.", "", false},
		{"user.u1.x", "", false},
		{"userx.u1", "", false},
	}
	for _, tt := range tests {
		if user, ok := RevokedKeyUser(tt.key); user != tt.user || ok != tt.ok {
			t.Errorf("RevokedKeyUser(%q) = %q, %v; want %q, %v", tt.key, user, ok, tt.user, tt.ok)
		}
	}
}

func TestRevocationRevokesIssuedAt(t *testing.T) {
	through := time.Date(2026, 11, 26, 12, 0, 5, 0, time.UTC)
	user := Revocation{User: "u1", IssuedThrough: through}
	tests := []struct {
		name string
		r    Revocation
		iat  time.Time
		want bool
	}{
		{"issued before", user, through.Add(-time.Hour), true},
		{"issued in the same second", user, through, true},
		{"issued the second after", user, through.Add(time.Second), false},
		{"a one-token revocation", Revocation{TokenID: "t1", User: "u1"}, through, false},
	}
	for _, tt := range tests {
		if got := tt.r.RevokesIssuedAt(tt.iat); got != tt.want {
			t.Errorf("%s: RevokesIssuedAt = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// BenchmarkSubjects measures building a send's subject: the lobby's, and
// a dm pair's (both ids checked, sorted).
func BenchmarkSubjects(b *testing.B) {
	b.Run("room", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := RoomSubject(Lobby); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("dm", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DMSubject("u7f3k2m9q1", "a4b8c2d6e0"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
