package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/services/chat"
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
	m, err := nc.RequestWithContext(ctx, chat.AuthKeysSubject, nil)
	if err != nil {
		return fmt.Errorf("request %s: %w", chat.AuthKeysSubject, err)
	}
	var set token.JWKS
	if err := json.Unmarshal(m.Data, &set); err != nil {
		return fmt.Errorf("%s answer: %w", chat.AuthKeysSubject, err)
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
