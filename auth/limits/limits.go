// Package limits counts abuse (failed logins, registrations) per account
// and per client address in a NATS KV bucket, so every auth instance sees
// the same counts and they survive restarts. An entry expires one window
// after its last increment: a count covers the failures since the last
// quiet window. Accounts and addresses are stored only as hashes.
package limits

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// casRetries bounds optimistic-update retries under contention (many
// attempts from one address at once all count on one key).
const casRetries = 64

// Counters is a set of named counters in a KV bucket whose TTL is the
// window.
type Counters struct {
	kv     jetstream.KeyValue
	window time.Duration
	now    func() time.Time
}

// New returns counters in kv (see chat.AuthLimitsBucketConfig) with window.
func New(kv jetstream.KeyValue, window time.Duration) *Counters {
	return &Counters{kv: kv, window: window, now: time.Now}
}

type entry struct {
	N    int       `json:"n"`
	Last time.Time `json:"last"`
}

// Key is a counter's KV key: kind, then hashes of its parts, so no account
// or address is stored and any string is a valid key.
func Key(kind string, parts ...string) string {
	k := kind
	for _, p := range parts {
		sum := sha256.Sum256([]byte(p))
		k += "." + hex.EncodeToString(sum[:12])
	}
	return k
}

// Count is a counter's value, and how long until it expires.
func (c *Counters) Count(ctx context.Context, key string) (int, time.Duration, error) {
	e, _, err := c.get(ctx, key)
	if err != nil {
		return 0, 0, err
	}
	return e.N, c.remaining(e), nil
}

func (c *Counters) remaining(e entry) time.Duration {
	if e.N == 0 {
		return 0
	}
	return max(e.Last.Add(c.window).Sub(c.now()), time.Second)
}

func (c *Counters) get(ctx context.Context, key string) (entry, uint64, error) {
	kve, err := c.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return entry{}, 0, nil
	}
	if err != nil {
		return entry{}, 0, fmt.Errorf("limits get: %w", err)
	}
	var e entry
	if err := json.Unmarshal(kve.Value(), &e); err != nil {
		// A corrupt entry counts as none; the next Add overwrites it.
		return entry{}, kve.Revision(), nil
	}
	return e, kve.Revision(), nil
}

// Add increments a counter and returns its new value. Under extreme
// contention on one key (a burst from one address), once the retries are
// spent the attempt is answered with the count it tried to write, not an
// error: the limit stays enforced from the count already stored, and a
// burst never turns into failures for everyone.
func (c *Counters) Add(ctx context.Context, key string) (int, error) {
	tried := 0
	for i := range casRetries {
		e, rev, err := c.get(ctx, key)
		if err != nil {
			return 0, err
		}
		e.N++
		tried = e.N
		e.Last = c.now().UTC()
		val, _ := json.Marshal(e)
		if rev == 0 {
			_, err = c.kv.Create(ctx, key, val)
		} else {
			_, err = c.kv.Update(ctx, key, val, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) {
			// Someone else counted meanwhile: read again, after a short
			// random pause growing with the attempts, to spread contenders.
			time.Sleep(time.Duration(rand.IntN(100*(i+1))) * time.Microsecond)
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("limits add: %w", err)
		}
		return e.N, nil
	}
	return tried, nil
}

// Reset forgets a counter.
func (c *Counters) Reset(ctx context.Context, key string) error {
	if err := c.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("limits reset: %w", err)
	}
	return nil
}
