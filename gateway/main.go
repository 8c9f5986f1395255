// Command gateway is the browser's only entry point to natter: it serves
// the web page, proxies /api/ to auth, and bridges websockets (/ws) to
// NATS (package bridge).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/natter/natter/gateway/apiproxy"
	"github.com/natter/natter/gateway/bridge"
	"github.com/natter/natter/gateway/site"
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
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

// Config is the gateway's configuration.
type Config struct {
	config.Base
	AuthURL   *url.URL
	Proxies   []netip.Prefix // trusted proxies: their X-Forwarded-For is passed on
	PprofAddr string
	OpsAddr   string // health and metrics listener; empty: on HTTPAddr
	Bridge    bridge.Config
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	var authURL, proxies, origins string
	fs := config.New(args[0], getenv, stderr)
	fs.Base(&c.Base, "127.0.0.1:8080")
	fs.String(&authURL, "auth-url", "AUTH_URL", "http://127.0.0.1:8081", "base URL of the auth service, where /api/ is proxied")
	fs.String(&proxies, "trusted-proxies", "TRUSTED_PROXIES", "", "addresses or CIDRs whose X-Forwarded-For is passed on (empty: none)")
	fs.String(&origins, "allowed-origins", "ALLOWED_ORIGINS", "", "comma-separated Origins allowed to open /ws (empty: own host)")
	fs.String(&c.PprofAddr, "pprof-addr", "PPROF_ADDR", "", "serve net/http/pprof here, on loopback only (empty: off)")
	fs.String(&c.OpsAddr, "ops-addr", "OPS_ADDR", "", "serve /metrics here, not on HTTP_ADDR (empty: on HTTP_ADDR)")
	c.Bridge.Limits.Flags(fs)
	fs.Stream(&c.Bridge.Stream)
	fs.Presence(&c.Bridge.Presence)
	fs.Duration(&c.Bridge.Heartbeat, "presence-heartbeat", "PRESENCE_HEARTBEAT", chat.DefaultPresenceHeartbeat, "presence refresh period (PRESENCE_TTL about 2.5 times it)")
	fs.Replicas(&c.Bridge.Stream.Replicas)
	if err := fs.Parse(args[1:]); err != nil {
		return c, err
	}
	c.Bridge.Presence.Replicas = c.Bridge.Stream.Replicas
	c.Bridge.Origins = strings.FieldsFunc(origins, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	if err := c.Bridge.Validate(); err != nil {
		return c, err
	}
	if c.PprofAddr != "" && !ops.IsLoopback(c.PprofAddr) {
		return c, fmt.Errorf("pprof addr %q: want a loopback address such as 127.0.0.1:6060", c.PprofAddr)
	}
	var err error
	if c.Proxies, err = apiproxy.ParsePrefixes(proxies); err != nil {
		return c, fmt.Errorf("trusted proxies: %w", err)
	}
	u, err := url.Parse(authURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("auth url %q: want http(s)://host[:port]", authURL)
	}
	c.AuthURL = u
	return c, nil
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
	logStart(log, cfg)
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	reg := ops.NewRegistry()
	gw := bridge.New(log, reg, cfg.Bridge)
	nc, js, err := natsconn.ConnectJetStream(cfg.Base, "gateway", log, gw.JetStreamOptions()...)
	if err != nil {
		return err
	}
	defer natsconn.Drain(nc, natsconn.DrainTimeout)
	if err := gw.Start(ctx, nc, js, fail); err != nil {
		return err
	}
	if err := ops.Profiling(ctx, log, cfg.PprofAddr); err != nil {
		return err
	}
	ready := append([]ops.Check{{Name: "nats", Run: natsconn.Ready(nc)}}, gw.Checks()...)
	if cfg.OpsAddr != "" {
		go func() {
			if err := ops.ListenAndServe(ctx, log.With("server", "ops"), cfg.OpsAddr, site.Ops(reg, ready)); err != nil {
				fail(fmt.Errorf("ops listener: %w", err)) // no metrics is no silent state
			}
		}()
	}
	err = ops.ListenAndServe(ctx, log, cfg.HTTPAddr, site.Public(reg, gw, apiproxy.New(log, cfg.AuthURL, cfg.Proxies), ready, cfg.OpsAddr == ""))
	// Sockets are hijacked connections: the HTTP shutdown leaves them to us.
	gw.Shutdown(2 * time.Second)
	if err != nil {
		return err
	}
	if err := ops.Cause(ctx); err != nil {
		return err
	}
	log.Info("gateway stopped")
	return nil
}

func logStart(log *slog.Logger, cfg Config) {
	b := cfg.Bridge
	log.Info("starting gateway", append(cfg.LogAttrs(), "version", version.Current(),
		"auth_url", config.RedactURL(cfg.AuthURL.String()), "trusted_proxies", fmt.Sprint(cfg.Proxies),
		"chat_retention", b.Stream.Retention.String(), "chat_dedupe_window", b.Stream.DedupeWindow.String(), "chat_max_bytes", b.Stream.MaxBytes,
		"js_replicas", b.Stream.Replicas, "presence_ttl", b.Presence.TTL.String())...)
}
