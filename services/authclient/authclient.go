// Package authclient is how natter's services ask auth over NATS: user
// lookups (auth.users.get) through one bounded cache, and auth's public
// keys (auth.keys) for a token.Verifier.
//
// The cache remembers found users only: an id auth does not know is asked
// again next time, so a user registered a moment ago is found at once.
// Each found user is kept for Config.TTL, so a renamed user shows the new
// name at most that late; at most Config.MaxUsers are kept, the oldest
// leaving first when a new one comes (they are also the first to expire).
package authclient

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/ops"
	"github.com/natter/natter/services/token"
)

// Defaults of Config.
const (
	// DefaultTimeout bounds one auth.users.get or auth.keys request.
	DefaultTimeout = 2 * time.Second
	// DefaultTTL is how long a found user is remembered.
	DefaultTTL = 10 * time.Minute
	// DefaultMaxUsers bounds the users remembered. One takes about 200
	// bytes (id, name, account handle, expiry, map and queue slots), so
	// a full cache holds about 10 MB.
	DefaultMaxUsers = 50_000
	// DefaultKeysRefresh is how often RefreshKeys re-reads auth's keys,
	// so a rotated key is picked up.
	DefaultKeysRefresh = 5 * time.Minute
)

// Config tunes a Client; a zero field takes its default.
type Config struct {
	Timeout     time.Duration // bounds one request to auth
	TTL         time.Duration // how long a found user is remembered
	MaxUsers    int           // users remembered at most
	KeysRefresh time.Duration // period of RefreshKeys
}

// Client asks auth over one NATS connection. It is safe for concurrent use.
type Client struct {
	nc  *nats.Conn
	cfg Config
	now func() time.Time

	mu    sync.Mutex
	found map[string]entry // remembered users by id
	// order holds found's ids once each, oldest first. Every entry lives
	// TTL from when it was stored, so this is also their expiry order.
	order []string
}

type entry struct {
	user    chat.User
	expires time.Time
}

// New returns a client of auth on nc.
func New(nc *nats.Conn, cfg Config) *Client {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.MaxUsers <= 0 {
		cfg.MaxUsers = DefaultMaxUsers
	}
	if cfg.KeysRefresh <= 0 {
		cfg.KeysRefresh = DefaultKeysRefresh
	}
	return &Client{nc: nc, cfg: cfg, now: time.Now, found: map[string]entry{}}
}

// Users returns the users among ids that auth knows, by id; ids it does not
// know, and ids that cannot be user ids (chat.ValidID), are left out.
// Remembered users are answered from the cache, the others asked of auth in
// requests of at most chat.MaxUsersPerRequest ids, each bounded by
// Config.Timeout. When a request fails (auth down or slow) the error comes
// with what is known all the same: the remembered users and those of the
// requests answered before.
func (c *Client) Users(ctx context.Context, ids []string) (map[string]chat.User, error) {
	users, missing := c.remembered(ids)
	for start := 0; start < len(missing); start += chat.MaxUsersPerRequest {
		batch := missing[start:min(start+chat.MaxUsersPerRequest, len(missing))]
		found, err := c.lookup(ctx, batch)
		if err != nil {
			return users, err
		}
		c.remember(found)
		for _, u := range found {
			users[u.ID] = u
		}
	}
	return users, nil
}

// Exists reports whether id is a user auth knows.
func (c *Client) Exists(ctx context.Context, id string) (bool, error) {
	users, err := c.Users(ctx, []string{id})
	if err != nil {
		return false, err
	}
	_, ok := users[id]
	return ok, nil
}

// remembered splits ids into the users the cache holds and the valid ids,
// each once, it does not.
func (c *Client) remembered(ids []string) (map[string]chat.User, []string) {
	users := make(map[string]chat.User, len(ids))
	var missing []string
	asked := map[string]bool{}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if e, ok := c.found[id]; ok && now.Before(e.expires) {
			users[id] = e.user
			continue
		}
		if !asked[id] && chat.ValidID(id) == nil {
			asked[id] = true
			missing = append(missing, id)
		}
	}
	return users, missing
}

// lookup asks auth for the users of ids.
func (c *Client) lookup(ctx context.Context, ids []string) ([]chat.User, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var resp chat.UsersGetResponse
	if err := natsconn.RequestJSON(ctx, c.nc, chat.AuthUsersGetSubject, chat.UsersGetRequest{IDs: ids}, &resp); err != nil {
		return nil, fmt.Errorf("user lookup: %w", err)
	}
	return resp.Users, nil
}

// remember stores users found at auth for TTL, making room by dropping the
// expired and then the oldest.
func (c *Client) remember(users []chat.User) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, u := range users {
		c.evictExpired(now)
		if e, ok := c.found[u.ID]; ok {
			// Found by two lookups at once: it keeps its place in order,
			// and so its expiry.
			e.user = u
			c.found[u.ID] = e
			continue
		}
		if len(c.found) >= c.cfg.MaxUsers {
			c.dropOldest()
		}
		c.found[u.ID] = entry{user: u, expires: now.Add(c.cfg.TTL)}
		c.order = append(c.order, u.ID)
	}
}

// evictExpired drops the entries that have expired: the oldest ones. An
// expired entry is so gone before its id can be stored again, and order
// never holds an id twice.
func (c *Client) evictExpired(now time.Time) {
	for len(c.order) > 0 && !now.Before(c.found[c.order[0]].expires) {
		c.dropOldest()
	}
}

func (c *Client) dropOldest() {
	delete(c.found, c.order[0])
	c.order = c.order[1:]
}

// FetchKeys asks auth for its public keys (auth.keys) and gives them to v.
func (c *Client) FetchKeys(ctx context.Context, v *token.Verifier) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var set token.JWKS
	if err := natsconn.RequestJSON(ctx, c.nc, chat.AuthKeysSubject, nil, &set); err != nil {
		return fmt.Errorf("auth keys: %w", err)
	}
	return v.SetKeys(set)
}

// RefreshKeys calls FetchKeys every Config.KeysRefresh until ctx ends. A
// failure keeps the keys v has and is passed to onErr (to log it).
func (c *Client) RefreshKeys(ctx context.Context, v *token.Verifier, onErr func(error)) {
	ops.Every(ctx, c.cfg.KeysRefresh, func(ctx context.Context) {
		if err := c.FetchKeys(ctx, v); err != nil {
			onErr(err)
		}
	})
}
