// Package password hashes and checks passwords with argon2id, stored in the
// PHC string format ($argon2id$v=19$m=...,t=...,p=...$salt$hash), and runs
// the hashing in a bounded pool so a login flood queues instead of
// exhausting memory and CPU.
package password

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id's cost parameters.
type Params struct {
	MemoryKiB   uint32
	Iterations  uint32
	Parallelism uint8
}

// OWASP's minimum for argon2id: 19 MiB, 2 iterations, 1 lane.
var DefaultParams = Params{MemoryKiB: 19456, Iterations: 2, Parallelism: 1}

const (
	saltLen = 16
	keyLen  = 32
)

// ErrMismatch is a wrong password.
var ErrMismatch = errors.New("password does not match")

// ErrBusy is returned when no hashing slot frees up before the caller's
// context ends.
var ErrBusy = errors.New("password hashing pool busy")

// Hash returns the PHC string of password under p with a random salt.
func Hash(password string, p Params) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, p.Iterations, p.MemoryKiB, p.Parallelism, keyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.MemoryKiB, p.Iterations, p.Parallelism, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Check compares password with a PHC string, using the parameters stored
// in it (so raising the cost leaves old hashes valid).
func Check(password, phc string) error {
	p, salt, key, err := Parse(phc)
	if err != nil {
		return err
	}
	got := argon2.IDKey([]byte(password), salt, p.Iterations, p.MemoryKiB, p.Parallelism, uint32(len(key)))
	if subtle.ConstantTimeCompare(got, key) != 1 {
		return ErrMismatch
	}
	return nil
}

// Parse splits a PHC argon2id string into its parameters, salt and key.
func Parse(phc string) (Params, []byte, []byte, error) {
	var p Params
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, errors.New("not an argon2id PHC string")
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return p, nil, nil, fmt.Errorf("argon2 version %q unsupported", parts[2])
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Iterations, &p.Parallelism); err != nil {
		return p, nil, nil, fmt.Errorf("argon2 parameters %q: %w", parts[3], err)
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return p, nil, nil, fmt.Errorf("salt: %w", err)
	}
	key, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(key) == 0 {
		return p, nil, nil, fmt.Errorf("hash: %v", err)
	}
	return p, salt, key, nil
}

// Pool runs at most its size of hash computations at once; the rest wait
// for a slot as long as their context allows.
type Pool struct {
	params Params
	slots  chan struct{}
	// dummy is a hash of nothing anyone knows, checked when an account
	// does not exist so that costs the same time as a wrong password.
	dummy string
}

// NewPool returns a pool of size slots hashing with params.
func NewPool(size int, params Params) (*Pool, error) {
	if size < 1 {
		return nil, fmt.Errorf("hash pool size %d: want at least 1", size)
	}
	dummy, err := Hash("natter-dummy-password-never-matches", params)
	if err != nil {
		return nil, err
	}
	return &Pool{params: params, slots: make(chan struct{}, size), dummy: dummy}, nil
}

func (p *Pool) acquire(ctx context.Context) error {
	select {
	case p.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrBusy, ctx.Err())
	}
}

func (p *Pool) release() { <-p.slots }

// Hash hashes password in the pool.
func (p *Pool) Hash(ctx context.Context, password string) (string, error) {
	if err := p.acquire(ctx); err != nil {
		return "", err
	}
	defer p.release()
	return Hash(password, p.params)
}

// Check checks password against phc in the pool. An empty phc (unknown
// account) is checked against a dummy hash and always mismatches, taking
// the same time as a real check.
func (p *Pool) Check(ctx context.Context, password, phc string) error {
	if err := p.acquire(ctx); err != nil {
		return err
	}
	defer p.release()
	if phc == "" {
		_ = Check(password, p.dummy)
		return ErrMismatch
	}
	return Check(password, phc)
}

// InUse is the number of hashes running now.
func (p *Pool) InUse() int { return len(p.slots) }
