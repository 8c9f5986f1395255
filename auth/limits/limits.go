// Package limits counts abuse (failed logins, registrations) per account
// and per client address in a NATS KV bucket, so every auth instance sees
// the same counts and they survive restarts. An entry expires one window
// after its last increment: a count covers the failures since the last
// quiet window. Accounts and addresses are stored only as hashes.
//
// Every change is a compare-and-set on the entry's revision, so no count is
// lost and Take's check and increment are one step, across instances too.
// Within one instance, Lock makes the steps on a key one at a time, so a
// burst on one key does not turn into a storm of retries, and a caller can
// make a decision over several keys in one step.
package limits

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// casRetries bounds optimistic-update retries under contention (other
// instances, or callers not holding Lock, changing the key meanwhile).
const casRetries = 64

// ErrContended is returned by Take and Give when the key kept changing
// under them for casRetries attempts: the step was not made.
var ErrContended = errors.New("limits: counter changed under every retry")

// Counters is a set of named counters in a KV bucket whose TTL is the
// window.
type Counters struct {
	kv     jetstream.KeyValue
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex
	locks map[string]*keyLock // keys locked or waited for now
}

// keyLock is one key's lock: a slot taken by the holder, and how many
// hold or wait for it (the entry goes when none does).
type keyLock struct {
	slot chan struct{}
	refs int
}

// New returns counters in kv (see chat.AuthLimitsBucketConfig) with window.
func New(kv jetstream.KeyValue, window time.Duration) *Counters {
	return &Counters{kv: kv, window: window, now: time.Now, locks: map[string]*keyLock{}}
}

// Lock waits until this instance holds key (or ctx ends), and returns the
// function that lets it go. The other methods do not lock: a caller holds
// the key around a step (read, decide, count) so that steps of this
// instance on a key see each other and do not contend.
func (c *Counters) Lock(ctx context.Context, key string) (unlock func(), err error) {
	c.mu.Lock()
	l := c.locks[key]
	if l == nil {
		l = &keyLock{slot: make(chan struct{}, 1)}
		c.locks[key] = l
	}
	l.refs++
	c.mu.Unlock()
	done := func() {
		c.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(c.locks, key)
		}
		c.mu.Unlock()
	}
	unlock = func() { <-l.slot; done() }
	select {
	case l.slot <- struct{}{}: // free: taken even if ctx has ended
		return unlock, nil
	default:
	}
	select {
	case l.slot <- struct{}{}:
		return unlock, nil
	case <-ctx.Done():
		done()
		return nil, fmt.Errorf("limits: waiting for a counter: %w", ctx.Err())
	}
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
// contention on one key from callers not holding Lock, once the retries
// are spent the attempt is answered with the count it tried to write, not
// an error: the limit stays enforced from the count already stored, and a
// burst never turns into failures for everyone.
func (c *Counters) Add(ctx context.Context, key string) (int, error) {
	e, _, err := c.update(ctx, key, func(e *entry) bool {
		e.N++
		e.Last = c.now().UTC()
		return true
	})
	if errors.Is(err, ErrContended) {
		return e.N, nil
	}
	return e.N, err
}

// Take counts one attempt on key unless the counter holds limit already:
// the check and the increment are one step (a compare-and-set on what was
// read), so however many attempts arrive at once, at most limit are
// counted. It reports whether this one was, and when not, how long until
// the counter expires.
func (c *Counters) Take(ctx context.Context, key string, limit int) (bool, time.Duration, error) {
	e, taken, err := c.update(ctx, key, func(e *entry) bool {
		if e.N >= limit {
			return false
		}
		e.N++
		e.Last = c.now().UTC()
		return true
	})
	if err != nil {
		return false, 0, err
	}
	if !taken {
		return false, c.remaining(e), nil
	}
	return true, 0, nil
}

// Give takes back one attempt counted by Add or Take (one that turned out
// not to be a failure), never below zero. It leaves the expiry as it is.
func (c *Counters) Give(ctx context.Context, key string) error {
	_, _, err := c.update(ctx, key, func(e *entry) bool {
		if e.N == 0 {
			return false
		}
		e.N--
		return true
	})
	return err
}

// update applies change to key's entry and stores the result if change
// says so, compare-and-set on the revision read, reading again when
// someone else wrote meanwhile. It returns the entry as changed (or as it
// stands, when change declined) and whether it was stored.
func (c *Counters) update(ctx context.Context, key string, change func(*entry) bool) (entry, bool, error) {
	var e entry
	for i := range casRetries {
		var rev uint64
		var err error
		e, rev, err = c.get(ctx, key)
		if err != nil {
			return e, false, err
		}
		if !change(&e) {
			return e, false, nil
		}
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
			return e, false, fmt.Errorf("limits update: %w", err)
		}
		return e, true, nil
	}
	return e, false, ErrContended
}

// Reset forgets a counter.
func (c *Counters) Reset(ctx context.Context, key string) error {
	if err := c.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("limits reset: %w", err)
	}
	return nil
}
