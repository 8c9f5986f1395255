// Package authclient is how natter's services ask auth over NATS: user
// lookups (auth.users.get) through a bounded cache of the users found
// (usercache: for Config.TTL, at most Config.MaxUsers), and auth's public
// keys (auth.keys) for a token.Verifier.
package authclient

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/ops"
	"github.com/natter/natter/services/token"
	"github.com/natter/natter/services/usercache"
)

// Defaults of Config.
const (
	// DefaultTimeout bounds one auth.users.get or auth.keys request.
	DefaultTimeout = 2 * time.Second
	// DefaultKeysRefresh is how often RefreshKeys re-reads auth's keys,
	// so a rotated key is picked up.
	DefaultKeysRefresh = 5 * time.Minute
)

// Config tunes a Client; a zero field takes its default.
type Config struct {
	Timeout     time.Duration // bounds one request to auth
	TTL         time.Duration // how long a found user is remembered (usercache.DefaultTTL)
	MaxUsers    int           // users remembered at most (usercache.DefaultMaxUsers)
	KeysRefresh time.Duration // period of RefreshKeys
}

// Client asks auth over one NATS connection. It is safe for concurrent use.
type Client struct {
	nc    *nats.Conn
	cfg   Config
	users *usercache.Cache
}

// New returns a client of auth on nc.
func New(nc *nats.Conn, cfg Config) *Client {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.KeysRefresh <= 0 {
		cfg.KeysRefresh = DefaultKeysRefresh
	}
	return &Client{nc: nc, cfg: cfg, users: usercache.New(usercache.Config{TTL: cfg.TTL, MaxUsers: cfg.MaxUsers})}
}

// Users returns the users among ids that auth knows, by id; ids it does not
// know, and ids that cannot be user ids (chat.ValidID), are left out.
// Remembered users are answered from the cache, the others asked of auth in
// requests of at most chat.MaxUsersPerRequest ids, each bounded by
// Config.Timeout. When a request fails (auth down or slow) the error comes
// with what is known all the same: the remembered users and those of the
// requests answered before.
func (c *Client) Users(ctx context.Context, ids []string) (map[string]chat.User, error) {
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		if chat.ValidID(id) == nil {
			valid = append(valid, id)
		}
	}
	users, missing := c.users.Split(valid)
	for start := 0; start < len(missing); start += chat.MaxUsersPerRequest {
		batch := missing[start:min(start+chat.MaxUsersPerRequest, len(missing))]
		found, err := c.lookup(ctx, batch)
		if err != nil {
			return users, err
		}
		c.users.Add(found...)
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
