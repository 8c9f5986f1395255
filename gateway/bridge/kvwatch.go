package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/ops"
)

// watchKV applies the entries of kv under keys with apply: first every
// current one, before it returns (first true), then each update until
// ctx ends. The client library's watch outlives reconnects; should it
// end anyway, a new one (after ops.SetupRetry) applies the bucket's state
// again, so nothing changed meanwhile is missed. what names the watch in
// logs.
func watchKV(ctx context.Context, log *slog.Logger, kv jetstream.KeyValue, keys, what string, apply func(e jetstream.KeyValueEntry, first bool)) error {
	w, err := loadKV(ctx, kv, keys, what, func(e jetstream.KeyValueEntry) { apply(e, true) })
	if err != nil {
		return err
	}
	later := func(e jetstream.KeyValueEntry) { apply(e, false) }
	go func() {
		for {
			followKV(ctx, w, later)
			if ctx.Err() != nil {
				return
			}
			log.Warn(what + " watch ended; watching again")
			for w = nil; w == nil; {
				select {
				case <-ctx.Done():
					return
				case <-time.After(ops.SetupRetry):
				}
				if w, err = loadKV(ctx, kv, keys, what, later); err != nil {
					log.Warn(what+" watch failed", "err", err)
				}
			}
		}
	}()
	return nil
}

// loadKV starts a watch and applies the current entries from it.
func loadKV(ctx context.Context, kv jetstream.KeyValue, keys, what string, apply func(jetstream.KeyValueEntry)) (jetstream.KeyWatcher, error) {
	w, err := kv.Watch(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", what, err)
	}
	for {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return nil, fmt.Errorf("%s watch ended while loading", what)
			case e == nil:
				return w, nil // the current entries are all applied
			default:
				apply(e)
			}
		}
	}
}

// followKV applies w's updates until it or ctx ends.
func followKV(ctx context.Context, w jetstream.KeyWatcher, apply func(jetstream.KeyValueEntry)) {
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e != nil {
				apply(e)
			}
		}
	}
}
