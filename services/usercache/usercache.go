// Package usercache remembers users found by id, bounded in time and
// size: what auth's user lookups keep of MongoDB and what the other
// services keep of auth's answers.
//
// Only found users are remembered: an id not found is looked up again
// next time, so a user registered a moment ago is found at once. Each user
// is kept for Config.TTL from when it was added, so a changed user is
// seen at most that late; at most Config.MaxUsers are kept, the oldest
// leaving first when a new one comes (they are also the first to expire).
package usercache

import (
	"sync"
	"time"

	"github.com/natter/natter/services/chat"
)

// Defaults of Config.
const (
	// DefaultTTL is how long a user is remembered.
	DefaultTTL = 10 * time.Minute
	// DefaultMaxUsers bounds the users remembered. One takes about 200
	// bytes (id, name, account handle, expiry, map and queue slots), so
	// a full cache holds about 10 MB.
	DefaultMaxUsers = 50_000
)

// Config bounds a Cache; a zero field takes its default.
type Config struct {
	TTL      time.Duration // how long a user is remembered
	MaxUsers int           // users remembered at most
}

// Cache remembers users by id. It is safe for concurrent use.
type Cache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu    sync.Mutex
	found map[string]entry
	// order holds found's ids once each, oldest first. Every entry lives
	// ttl from when it was added, so this is also their expiry order.
	order []string
}

type entry struct {
	user    chat.User
	expires time.Time
}

// New returns an empty cache.
func New(cfg Config) *Cache {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.MaxUsers <= 0 {
		cfg.MaxUsers = DefaultMaxUsers
	}
	return &Cache{ttl: cfg.TTL, max: cfg.MaxUsers, now: time.Now, found: map[string]entry{}}
}

// Split returns the users among ids the cache remembers, by id, and the
// other ids, each once, in the order of ids: those to look up.
func (c *Cache) Split(ids []string) (map[string]chat.User, []string) {
	users := make(map[string]chat.User, len(ids))
	var missing []string
	listed := map[string]bool{}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if e, ok := c.found[id]; ok && now.Before(e.expires) {
			users[id] = e.user
			continue
		}
		if !listed[id] {
			listed[id] = true
			missing = append(missing, id)
		}
	}
	return users, missing
}

// Add remembers users for the TTL, making room by dropping the expired
// and then the oldest.
func (c *Cache) Add(users ...chat.User) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, u := range users {
		c.dropExpired(now)
		if e, ok := c.found[u.ID]; ok {
			// Added by two lookups at once: it keeps its place in order,
			// and so its expiry.
			e.user = u
			c.found[u.ID] = e
			continue
		}
		if len(c.found) >= c.max {
			c.dropOldest()
		}
		c.found[u.ID] = entry{user: u, expires: now.Add(c.ttl)}
		c.order = append(c.order, u.ID)
	}
}

// Len is the number of users held, expired ones included until they are
// dropped.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.found)
}

// dropExpired drops the entries that have expired: the oldest ones. An
// expired entry is so gone before its id can be added again, and order
// never holds an id twice.
func (c *Cache) dropExpired(now time.Time) {
	for len(c.order) > 0 && !now.Before(c.found[c.order[0]].expires) {
		c.dropOldest()
	}
}

func (c *Cache) dropOldest() {
	delete(c.found, c.order[0])
	c.order = c.order[1:]
}
