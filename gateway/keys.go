package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/ops"
	"github.com/natter/natter/services/token"
)

// Key refresh timing.
const (
	// keysTimeout bounds one auth.keys request.
	keysTimeout = 2 * time.Second
	// keysRefresh is how often the gateway re-reads auth's keys, so a
	// rotated key is picked up; auth being down meanwhile changes nothing.
	keysRefresh = 5 * time.Minute
)

// fetchKeys asks auth for its public keys and gives them to v.
func fetchKeys(ctx context.Context, nc *nats.Conn, v *token.Verifier) error {
	ctx, cancel := context.WithTimeout(ctx, keysTimeout)
	defer cancel()
	var set token.JWKS
	if err := natsconn.RequestJSON(ctx, nc, chat.AuthKeysSubject, nil, &set); err != nil {
		return err
	}
	return v.SetKeys(set)
}

// refreshKeys re-reads the keys every keysRefresh until ctx ends; failures
// keep the keys already known.
func refreshKeys(ctx context.Context, log *slog.Logger, nc *nats.Conn, v *token.Verifier) {
	ops.Every(ctx, keysRefresh, func(ctx context.Context) {
		if err := fetchKeys(ctx, nc, v); err != nil {
			log.Warn("key refresh failed; keeping the known keys", "err", err)
		}
	})
}
