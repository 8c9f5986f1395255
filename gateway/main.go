// Command gateway is the browser's only entry point to natter: it serves
// the web page, proxies /api/ to auth, and (later) bridges websockets to
// NATS.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/config"
	"github.com/natter/natter/services/logging"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/ops"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

// Config is the gateway's configuration.
type Config struct {
	config.Base
	AuthURL  string
	Stream   chat.StreamOptions
	Presence chat.PresenceOptions
}

// setupRetry is the pause between attempts to create the stream and bucket
// while NATS is not reachable yet.
const setupRetry = time.Second

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	fs := config.New(args[0], getenv, stderr)
	fs.Base(&c.Base, "127.0.0.1:8080")
	fs.String(&c.AuthURL, "auth-url", "AUTH_URL", "http://127.0.0.1:8081", "base URL of the auth service, where /api/ is proxied")
	fs.Stream(&c.Stream)
	fs.Presence(&c.Presence)
	fs.Replicas(&c.Stream.Replicas)
	if err := fs.Parse(args[1:]); err != nil {
		return c, err
	}
	c.Presence.Replicas = c.Stream.Replicas
	u, err := url.Parse(c.AuthURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("auth url %q: want http(s)://host[:port]", c.AuthURL)
	}
	return c, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log, err := logging.New(stdout, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	log.Info("starting gateway", append(cfg.LogAttrs(),
		"auth_url", config.RedactURL(cfg.AuthURL),
		"chat_retention", cfg.Stream.Retention.String(), "chat_dedupe_window", cfg.Stream.DedupeWindow.String(),
		"js_replicas", cfg.Stream.Replicas, "presence_ttl", cfg.Presence.TTL.String())...)

	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)

	nc, err := natsconn.Connect(cfg.NATSURL, "natter-gateway", log)
	if err != nil {
		return err
	}
	defer natsconn.Drain(nc, 2*time.Second)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	setup := ops.Setup(ctx, log, "jetstream", setupRetry, func(ctx context.Context) error {
		if _, err := chat.EnsureStream(ctx, js, cfg.Stream); err != nil {
			return err
		}
		_, err := chat.EnsurePresenceBucket(ctx, js, cfg.Presence)
		return err
	}, isConflict, fail)

	authURL, _ := url.Parse(cfg.AuthURL) // checked in parseConfig
	handler := newServer(log, ops.NewRegistry(), authURL, []ops.Check{
		{Name: "nats", Run: natsconn.Ready(nc)},
		setup.Check(),
	})
	if err := ops.ListenAndServe(ctx, log, cfg.HTTPAddr, handler); err != nil {
		return err
	}
	if err := ops.Cause(ctx); err != nil {
		return err
	}
	log.Info("gateway stopped")
	return nil
}

func isConflict(err error) bool { return errors.Is(err, chat.ErrConfigConflict) }
