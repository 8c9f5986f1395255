// Package token issues and verifies natter's access tokens: EdDSA (Ed25519)
// JWTs. Auth holds the private key and signs; every other service verifies
// offline with auth's public keys, published as a JWKS on the auth.keys
// endpoint, so no service but auth can mint a token.
package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Fixed claims of every natter token.
const (
	Audience = "natter"
	Issuer   = "natter-auth"
	// Leeway tolerates clock differences between auth and verifiers.
	Leeway = 30 * time.Second
	// DefaultLifetime is how long a token is valid.
	DefaultLifetime = 24 * time.Hour
)

// ErrInvalid reports a token that is malformed, forged, expired, or meant
// for another audience or issuer.
var ErrInvalid = errors.New("invalid token")

// Claims are a token's claims: sub is the user id, jti the token id that
// revocations name.
type Claims struct {
	Name string `json:"name"`
	// Account is the user's account handle: unique, unlike Name, so the
	// page shows it beside the name of everything the user sends. Empty
	// in tokens issued without one (Issue).
	Account string `json:"acct,omitempty"`
	jwt.RegisteredClaims
}

// UserID is the token's subject.
func (c *Claims) UserID() string { return c.Subject }

// Key is an Ed25519 signing key with its key id.
type Key struct {
	ID      string
	Private ed25519.PrivateKey
}

// KeyID derives a stable key id from a public key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

// NewKey wraps a private key.
func NewKey(priv ed25519.PrivateKey) Key {
	return Key{ID: KeyID(priv.Public().(ed25519.PublicKey)), Private: priv}
}

// ParseKeyPEM reads a PKCS#8 PEM Ed25519 private key (as written by
// `openssl genpkey -algorithm ed25519`).
func ParseKeyPEM(data []byte) (Key, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return Key{}, errors.New("signing key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return Key{}, fmt.Errorf("signing key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return Key{}, fmt.Errorf("signing key: %T, want an Ed25519 key", k)
	}
	return NewKey(priv), nil
}

// LoadOrCreateKeyFile reads the PEM key at path; if the file does not exist
// and create is true, it generates a key and writes it there (mode 0600),
// so a dev setup keeps one key across restarts.
func LoadOrCreateKeyFile(path string, create bool) (Key, bool, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		k, err := ParseKeyPEM(data)
		return k, false, err
	}
	if !errors.Is(err, os.ErrNotExist) || !create {
		return Key{}, false, fmt.Errorf("signing key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, false, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return Key{}, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return Key{}, false, fmt.Errorf("signing key: %w", err)
	}
	// O_EXCL: two processes creating at once must not overwrite each other.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return LoadOrCreateKeyFile(path, false)
		}
		return Key{}, false, fmt.Errorf("signing key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		_ = f.Close()
		return Key{}, false, fmt.Errorf("signing key: %w", err)
	}
	if err := f.Close(); err != nil {
		return Key{}, false, fmt.Errorf("signing key: %w", err)
	}
	return NewKey(priv), true, nil
}

// Issue signs a token for user id and name, valid for lifetime from now,
// naming no account handle.
func (k Key) Issue(userID, name string, now time.Time, lifetime time.Duration) (string, *Claims, error) {
	return k.IssueAccount(userID, "", name, now, lifetime)
}

// IssueAccount signs a token for user id, account handle and name, valid
// for lifetime from now.
func (k Key) IssueAccount(userID, account, name string, now time.Time, lifetime time.Duration) (string, *Claims, error) {
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", nil, err
	}
	c := &Claims{
		Name: name, Account: account,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    Issuer,
			Subject:   userID,
			Audience:  jwt.ClaimStrings{Audience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(lifetime)),
			ID:        base64.RawURLEncoding.EncodeToString(jti),
		},
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = k.ID
	s, err := t.SignedString(k.Private)
	if err != nil {
		return "", nil, fmt.Errorf("sign token: %w", err)
	}
	return s, c, nil
}

// JWK is one public key in JSON Web Key form (RFC 8037).
type JWK struct {
	KeyType string `json:"kty"`
	Curve   string `json:"crv"`
	X       string `json:"x"`
	KeyID   string `json:"kid"`
	Alg     string `json:"alg"`
	Use     string `json:"use"`
}

// JWKS is a JSON Web Key Set: what auth.keys answers.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// PublicJWK is k's public half.
func (k Key) PublicJWK() JWK {
	return JWK{
		KeyType: "OKP", Curve: "Ed25519", Alg: "EdDSA", Use: "sig", KeyID: k.ID,
		X: base64.RawURLEncoding.EncodeToString(k.Private.Public().(ed25519.PublicKey)),
	}
}

// Verifier checks tokens against a set of public keys, which may be
// replaced at any time (key refresh, rotation).
type Verifier struct {
	mu   sync.RWMutex
	keys map[string]ed25519.PublicKey
	now  func() time.Time
	// verified remembers tokens whose signature checked out, so the same
	// token again (a reconnect, a second tab) costs a map lookup instead
	// of an Ed25519 verification (about 100 µs). Emptied when the keys
	// change and when full; expiry is checked on every use.
	verified map[string]Claims
}

// MaxVerified bounds the verified tokens a Verifier remembers.
const MaxVerified = 10000

// NewVerifier returns a verifier with no keys; SetKeys gives it some.
func NewVerifier() *Verifier {
	return &Verifier{keys: map[string]ed25519.PublicKey{}, now: time.Now, verified: map[string]Claims{}}
}

// SetKeys replaces the verifier's keys with the Ed25519 keys of set.
func (v *Verifier) SetKeys(set JWKS) error {
	keys := make(map[string]ed25519.PublicKey, len(set.Keys))
	for _, k := range set.Keys {
		if k.KeyType != "OKP" || k.Curve != "Ed25519" || (k.Alg != "" && k.Alg != "EdDSA") {
			continue
		}
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return fmt.Errorf("key %q: bad x", k.KeyID)
		}
		keys[k.KeyID] = ed25519.PublicKey(x)
	}
	if len(keys) == 0 {
		return errors.New("key set has no Ed25519 key")
	}
	v.mu.Lock()
	v.keys = keys
	clear(v.verified) // a key may have gone: its tokens must check again
	v.mu.Unlock()
	return nil
}

// HasKeys reports whether the verifier can verify anything yet.
func (v *Verifier) HasKeys() bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.keys) > 0
}

// Verify checks s's signature (EdDSA only, by a known kid), issuer,
// audience and expiry, and returns its claims.
func (v *Verifier) Verify(s string) (*Claims, error) {
	v.mu.RLock()
	known, ok := v.verified[s]
	v.mu.RUnlock()
	if ok {
		// Signature, issuer and audience held; time moves on.
		if !known.ExpiresAt.Time.Add(Leeway).After(v.now()) {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, jwt.ErrTokenExpired)
		}
		return &known, nil
	}
	c, err := v.verify(s)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	if len(v.verified) >= MaxVerified {
		clear(v.verified)
	}
	v.verified[s] = *c
	v.mu.Unlock()
	return c, nil
}

// verify is Verify without the cache.
func (v *Verifier) verify(s string) (*Claims, error) {
	c := &Claims{}
	_, err := jwt.ParseWithClaims(s, c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		v.mu.RLock()
		key, ok := v.keys[kid]
		v.mu.RUnlock()
		if !ok {
			return nil, fmt.Errorf("unknown key id %q", kid)
		}
		return key, nil
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithAudience(Audience),
		jwt.WithIssuer(Issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(v.now),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if c.Subject == "" || c.ID == "" {
		return nil, fmt.Errorf("%w: missing sub or jti", ErrInvalid)
	}
	return c, nil
}

// FromRequest finds a request's token: "Authorization: Bearer <token>",
// else the cookie named cookie. A malformed Authorization header counts as
// no token (the cookie is not consulted then: the client said what it
// meant). "" means none.
func FromRequest(r *http.Request, cookie string) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return ""
		}
		return strings.TrimSpace(tok)
	}
	if c, err := r.Cookie(cookie); err == nil {
		return c.Value
	}
	return ""
}
