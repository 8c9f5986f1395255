package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func newKey(t *testing.T) Key {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return NewKey(priv)
}

func verifierFor(t *testing.T, keys ...Key) *Verifier {
	t.Helper()
	var set JWKS
	for _, k := range keys {
		set.Keys = append(set.Keys, k.PublicJWK())
	}
	v := NewVerifier()
	if err := v.SetKeys(set); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestIssueVerify(t *testing.T) {
	k := newKey(t)
	s, issued, err := k.Issue("u1", "小明", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := verifierFor(t, k).Verify(s)
	if err != nil {
		t.Fatal(err)
	}
	if c.UserID() != "u1" || c.Name != "小明" || c.ID != issued.ID || c.ID == "" {
		t.Fatalf("claims = %+v", c)
	}
	if c.Audience[0] != Audience || c.Issuer != Issuer {
		t.Fatalf("aud/iss = %v %v", c.Audience, c.Issuer)
	}
}

// TestIssueAccount checks the account handle travels in the token, and
// that a token without one verifies with it empty.
func TestIssueAccount(t *testing.T) {
	k := newKey(t)
	v := verifierFor(t, k)
	tests := []struct{ name, account string }{
		{"with a handle", "not-alice"},
		{"without", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, issued, err := k.IssueAccount("u1", tt.account, "Alice", time.Now(), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			c, err := v.Verify(s)
			if err != nil {
				t.Fatal(err)
			}
			if c.Account != tt.account || issued.Account != tt.account || c.Name != "Alice" || c.UserID() != "u1" {
				t.Fatalf("claims = %+v, want account %q", c, tt.account)
			}
		})
	}
}

// sign builds a token with any method, key and claims, as an attacker could.
func sign(t *testing.T, m jwt.SigningMethod, key any, kid string, claims jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRejectsTampering(t *testing.T) {
	k := newKey(t)
	other := newKey(t)
	v := verifierFor(t, k)
	now := time.Now()
	good := func() *Claims {
		return &Claims{Name: "n", RegisteredClaims: jwt.RegisteredClaims{
			Issuer: Issuer, Subject: "u1", Audience: jwt.ClaimStrings{Audience}, ID: "j1",
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
		}}
	}
	valid, _, err := k.Issue("u1", "n", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	flip := []byte(valid)
	flip[len(flip)-5] ^= 0x01
	pub := []byte(k.Private.Public().(ed25519.PublicKey))

	tests := []struct {
		name  string
		token string
	}{
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, k.ID, good())},
		{"HS256 keyed with the public key", sign(t, jwt.SigningMethodHS256, pub, k.ID, good())},
		{"expired", sign(t, jwt.SigningMethodEdDSA, k.Private, k.ID, func() *Claims {
			c := good()
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Hour))
			return c
		}())},
		{"no expiry", sign(t, jwt.SigningMethodEdDSA, k.Private, k.ID, func() *Claims { c := good(); c.ExpiresAt = nil; return c }())},
		{"wrong audience", sign(t, jwt.SigningMethodEdDSA, k.Private, k.ID, func() *Claims { c := good(); c.Audience = jwt.ClaimStrings{"other"}; return c }())},
		{"wrong issuer", sign(t, jwt.SigningMethodEdDSA, k.Private, k.ID, func() *Claims { c := good(); c.Issuer = "evil"; return c }())},
		{"no subject", sign(t, jwt.SigningMethodEdDSA, k.Private, k.ID, func() *Claims { c := good(); c.Subject = ""; return c }())},
		{"issued in the future", sign(t, jwt.SigningMethodEdDSA, k.Private, k.ID, func() *Claims {
			c := good()
			c.IssuedAt = jwt.NewNumericDate(now.Add(time.Hour))
			return c
		}())},
		{"bit-flipped signature", string(flip)},
		{"unknown kid", sign(t, jwt.SigningMethodEdDSA, k.Private, "nope", good())},
		{"signed by another key under our kid", sign(t, jwt.SigningMethodEdDSA, other.Private, k.ID, good())},
		{"garbage", "not.a.token"},
		{"empty", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(tt.token)
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
		})
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "key.pem")
	if _, _, err := LoadOrCreateKeyFile(path, false); err == nil {
		t.Fatal("missing key file accepted without create")
	}
	k1, created, err := LoadOrCreateKeyFile(path, true)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v; want 0600", st.Mode(), err)
	}
	k2, created, err := LoadOrCreateKeyFile(path, true)
	if err != nil || created || k2.ID != k1.ID {
		t.Fatalf("reload: created=%v err=%v same=%v", created, err, k2.ID == k1.ID)
	}
	if err := os.WriteFile(path, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKeyFile(path, true); err == nil || !strings.Contains(err.Error(), "signing key") {
		t.Fatalf("corrupt key file: %v", err)
	}
}

// A token verified once is remembered, but still expires on time, and is
// checked again when the keys change (its key may be gone).
func TestVerifyRemembersButExpiresAndForgetsOnKeyChange(t *testing.T) {
	k := newKey(t)
	now := time.Now()
	s, _, err := k.Issue("u1", "Ann", now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	v := verifierFor(t, k)
	v.now = func() time.Time { return now }
	for i := range 2 {
		if c, err := v.Verify(s); err != nil || c.UserID() != "u1" {
			t.Fatalf("verify %d: %+v %v", i, c, err)
		}
	}
	if len(v.verified) != 1 {
		t.Fatalf("%d tokens remembered, want 1", len(v.verified))
	}
	v.now = func() time.Time { return now.Add(time.Minute + Leeway + time.Second) }
	if _, err := v.Verify(s); !errors.Is(err, ErrInvalid) || !errors.Is(err, jwt.ErrTokenExpired) {
		t.Fatalf("remembered token after expiry: %v, want expired", err)
	}
	v.now = func() time.Time { return now }
	other := newKey(t)
	if err := v.SetKeys(JWKS{Keys: []JWK{other.PublicJWK()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(s); !errors.Is(err, ErrInvalid) {
		t.Fatalf("token of a removed key after SetKeys: %v, want invalid", err)
	}
}
