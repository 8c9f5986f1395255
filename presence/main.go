// Command presence answers who is online across every gateway. Its state
// lives in the NATS KV bucket "presence"; this process serves health and
// metrics over HTTP and its API over NATS.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/config"
	"github.com/natter/natter/services/logging"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/ops"
	"github.com/natter/natter/services/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "presence:", err)
		os.Exit(1)
	}
}

// Config is the presence service's configuration.
type Config struct {
	config.Base
	Presence chat.PresenceOptions
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	fs := config.New(args[0], getenv, stderr)
	fs.Base(&c.Base, "127.0.0.1:8082")
	fs.Presence(&c.Presence)
	fs.Replicas(&c.Presence.Replicas)
	err := fs.Parse(args[1:])
	return c, err
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == ops.HealthcheckCommand {
		return ops.Healthcheck(ctx, args[1:], stdout)
	}
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log, err := logging.New(stdout, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	ver := version.Current()
	log.Info("starting presence", append(cfg.LogAttrs(), "version", ver,
		"presence_ttl", cfg.Presence.TTL.String(), "js_replicas", cfg.Presence.Replicas)...)

	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)

	nc, js, err := natsconn.ConnectJetStream(cfg.Base, "presence", log)
	if err != nil {
		return err
	}
	defer natsconn.Drain(nc, natsconn.DrainTimeout)
	go natsconn.Watchdog(ctx, nc, natsconn.WatchdogPeriod, natsconn.WatchdogMisses, log)
	reg := ops.NewRegistry()
	svc := newService(log, nc, js, reg, cfg.Presence.TTL)
	setup := ops.Setup(ctx, log, "bucket", ops.SetupRetry, func(ctx context.Context) error {
		kv, err := chat.EnsurePresenceBucket(ctx, js, cfg.Presence)
		if err != nil {
			return err
		}
		if _, err := chat.EnsurePresenceStream(ctx, js, cfg.Presence.Replicas); err != nil {
			return err
		}
		go func() {
			if err := svc.follow(ctx, kv); err != nil {
				fail(err)
			}
		}()
		go svc.clean(ctx, kv, cfg.Presence.TTL)
		return nil
	}, ops.PermanentIs(chat.ErrConfigConflict), fail)
	ms, err := svc.addMicro(nc, ver)
	if err != nil {
		return fmt.Errorf("micro service: %w", err)
	}
	defer func() { _ = ms.Stop() }()

	mux := http.NewServeMux()
	mux.Handle("GET /healthz", ops.Healthz())
	mux.Handle("GET /readyz", ops.Readyz(ops.Check{Name: "nats", Run: natsconn.Ready(nc)}, setup.Check(), svc.loaded.Check()))
	mux.Handle("GET /metrics", ops.Metrics(reg))
	if err := ops.ListenAndServe(ctx, log, cfg.HTTPAddr, ops.NewHTTPMetrics(reg).Wrap(mux)); err != nil {
		return err
	}
	if err := ops.Cause(ctx); err != nil {
		return err
	}
	log.Info("presence stopped")
	return nil
}
