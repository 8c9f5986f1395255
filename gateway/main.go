// Command gateway is the browser's only entry point to natter: it serves
// the web page, proxies /api/ to auth, and bridges websockets (/ws) to
// NATS: sends are stored in the CHAT stream, stored messages are delivered
// to every local socket that may see them.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/gateway/wsconn"
	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/config"
	"github.com/natter/natter/services/logging"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/ops"
	"github.com/natter/natter/services/presencekv"
	"github.com/natter/natter/services/token"
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
	AuthURL   string
	Origins   string
	Proxies   []netip.Prefix // trusted proxies: their X-Forwarded-For is passed on
	Stream    chat.StreamOptions
	Presence  chat.PresenceOptions
	WS        WSLimits
	Heartbeat time.Duration
	PprofAddr string
}

// setupRetry is the pause between attempts to create the stream and bucket
// while NATS is not reachable yet.
const setupRetry = time.Second

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	var proxies string
	fs := config.New(args[0], getenv, stderr)
	fs.Base(&c.Base, "127.0.0.1:8080")
	fs.String(&c.AuthURL, "auth-url", "AUTH_URL", "http://127.0.0.1:8081", "base URL of the auth service, where /api/ is proxied")
	fs.String(&proxies, "trusted-proxies", "TRUSTED_PROXIES", "", "addresses or CIDRs (load balancer, ingress) whose X-Forwarded-For is passed on to auth; empty: none, the peer is the client")
	fs.String(&c.Origins, "allowed-origins", "ALLOWED_ORIGINS", "", "comma-separated Origin values allowed to open /ws (empty: the gateway's own host)")
	var maxFrame int
	fs.Int(&maxFrame, "max-frame-bytes", "MAX_FRAME_BYTES", chat.MaxFrameBytes, "largest client frame; bigger ones close the socket with 1009")
	fs.Int(&c.WS.MaxTextChars, "max-text-chars", "MAX_TEXT_CHARS", chat.MaxTextChars, "longest message text, in characters")
	fs.Float(&c.WS.SendRate, "send-rate", "SEND_RATE", 10, "client frames per second per socket, sustained")
	fs.Int(&c.WS.SendBurst, "send-burst", "SEND_BURST", 30, "client frames per socket allowed at once above the rate")
	fs.Int(&c.WS.FloodStrikes, "flood-strikes", "FLOOD_STRIKES", 20, "rate-limited frames in a row before the socket is closed (4008)")
	fs.Int(&c.WS.QueueLen, "send-queue", "SEND_QUEUE", 1024, "server objects queued per socket before it is closed as too slow (4009)")
	fs.Int(&c.WS.QueueBytes, "send-queue-bytes", "SEND_QUEUE_BYTES", 4<<20, "server bytes queued per socket before it is closed as too slow (4009)")
	fs.Int(&c.WS.SocketsPerUser, "sockets-per-user", "SOCKETS_PER_USER", 20, "open sockets per user, counted on all gateways; more are refused with 429 before the upgrade")
	fs.Int(&c.WS.HistoryBytes, "history-max-bytes", "HISTORY_MAX_BYTES", 256<<10, "largest history answer, in bytes of messages; a longer page is cut and says more")
	fs.Int(&c.WS.HistoryCost, "history-cost", "HISTORY_COST", 5, "send-rate tokens one history request takes (a send takes one; at most SEND_BURST)")
	fs.Int(&c.WS.MaxReplay, "max-replay", "MAX_REPLAY", 5000, "messages one resume replays at most; beyond, resumed says complete=false")
	fs.Duration(&c.WS.PingInterval, "ping-interval", "PING_INTERVAL", 25*time.Second, "websocket ping period; a socket silent for two periods is dropped")
	fs.Duration(&c.WS.WriteDelay, "write-delay", "WRITE_DELAY", 20*time.Millisecond, "a busy socket (written to more often than every delay, on average) written to less than this ago waits out the rest before its next write, so messages arriving meanwhile share one write: most writes of a socket in a busy room at least a delay apart, none delayed on other sockets (0: off; at most 100ms; the default suits rooms of hundreds)")
	fs.String(&c.PprofAddr, "pprof-addr", "PPROF_ADDR", "", "serve net/http/pprof here (loopback, for profiling; empty: off)")
	fs.Stream(&c.Stream)
	fs.Presence(&c.Presence)
	fs.Duration(&c.Heartbeat, "presence-heartbeat", "PRESENCE_HEARTBEAT", chat.DefaultPresenceHeartbeat, "how often this gateway refreshes its sockets' presence (keep PRESENCE_TTL about 2.5 times this)")
	fs.Replicas(&c.Stream.Replicas)
	if err := fs.Parse(args[1:]); err != nil {
		return c, err
	}
	c.Presence.Replicas = c.Stream.Replicas
	c.WS.MaxFrameBytes = int64(maxFrame)
	if c.Heartbeat <= 0 || c.Heartbeat >= c.Presence.TTL {
		return c, fmt.Errorf("presence heartbeat %s must be shorter than the presence TTL %s", c.Heartbeat, c.Presence.TTL)
	}
	if c.Stream.Retention > 0 && c.Stream.DedupeWindow > c.Stream.Retention {
		return c, fmt.Errorf("chat dedupe window %s is longer than the retention %s", c.Stream.DedupeWindow, c.Stream.Retention)
	}
	// A history answer, or one message at its longest, must fit in a
	// queue with room to spare, or a reader keeping up would be closed.
	if c.WS.QueueBytes < 2*max(c.WS.HistoryBytes, maxMessageFrame(c.WS.MaxTextChars)) {
		return c, fmt.Errorf("send queue bytes %d: want at least twice the history answer (%d) and the longest message frame (%d)",
			c.WS.QueueBytes, c.WS.HistoryBytes, maxMessageFrame(c.WS.MaxTextChars))
	}
	if c.WS.HistoryBytes < 1 || c.WS.HistoryCost < 1 || c.WS.SocketsPerUser < 1 {
		return c, fmt.Errorf("history bytes %d, history cost %d, sockets per user %d: want each positive", c.WS.HistoryBytes, c.WS.HistoryCost, c.WS.SocketsPerUser)
	}
	if maxFrame < 1024 || c.WS.MaxTextChars < 1 || c.WS.SendRate <= 0 || c.WS.SendBurst < 1 || c.WS.FloodStrikes < 1 || c.WS.QueueLen < 1 || c.WS.PingInterval < time.Second || c.WS.MaxReplay < 1 || c.WS.WriteDelay < 0 || c.WS.WriteDelay > maxWriteDelay {
		return c, fmt.Errorf("websocket limits out of range: %+v", c.WS)
	}
	prefixes, err := parsePrefixes(proxies)
	if err != nil {
		return c, fmt.Errorf("trusted proxies: %w", err)
	}
	c.Proxies = prefixes
	u, err := url.Parse(c.AuthURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("auth url %q: want http(s)://host[:port]", c.AuthURL)
	}
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
	log.Info("starting gateway", append(cfg.LogAttrs(),
		"auth_url", config.RedactURL(cfg.AuthURL), "trusted_proxies", fmt.Sprint(cfg.Proxies),
		"chat_retention", cfg.Stream.Retention.String(), "chat_dedupe_window", cfg.Stream.DedupeWindow.String(), "chat_max_bytes", cfg.Stream.MaxBytes,
		"js_replicas", cfg.Stream.Replicas, "presence_ttl", cfg.Presence.TTL.String())...)

	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)

	acks := newSendAcks()
	nc, js, err := natsconn.ConnectJetStream(cfg.Base, "gateway", log,
		// Sends are stored asynchronously (see handleSend): answered by
		// acks; one that gets no answer fails after publishTimeout.
		jetstream.WithPublishAsyncAckHandler(acks.stored),
		jetstream.WithPublishAsyncErrHandler(acks.failed),
		jetstream.WithPublishAsyncTimeout(publishTimeout),
		jetstream.WithPublishAsyncMaxPending(maxStoresInFlight))
	if err != nil {
		return err
	}
	defer natsconn.Drain(nc, natsconn.DrainTimeout)
	gatewayID := newConnID()
	log = log.With("gateway", gatewayID)
	reg := ops.NewRegistry()
	m := newMetrics(reg)
	h, err := newHub(log, nc, m)
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	defer h.close()
	g := &gateway{
		log: log, nc: nc, js: js, verifier: token.NewVerifier(), hub: h, acks: acks, limits: cfg.WS, metrics: m,
		slots:   newSocketSlots(cfg.WS.SocketsPerUser),
		origins: map[string]bool{},
		sockets: wsconn.NewServer(wsconn.Options{
			ReadLimit: cfg.WS.MaxFrameBytes, QueueLen: cfg.WS.QueueLen, QueueBytes: cfg.WS.QueueBytes,
			PingInterval: cfg.WS.PingInterval, WriteDelay: cfg.WS.WriteDelay, Workers: runtime.GOMAXPROCS(0),
			TooSlowCode: chat.CloseTooSlow, TooSlowReason: "too slow: send queue full",
			OnWrite:   func(n int) { m.objectsOut.Add(float64(n)) },
			OnTooSlow: m.slowCloses.Inc,
		}),
	}
	defer g.sockets.Close() // after stopSockets: the closes are writes
	// Core NATS does not redeliver what was published while the connection
	// was down (a NATS node failed): the sockets open then resume from the
	// stream instead, so they miss nothing.
	// Live delivery to the sockets stops as soon as the connection drops,
	// so none sees a message from after the gap; once reconnected, the
	// closes wait resumeCloseDelay, so the new subscriptions' interest has
	// reached every node of the cluster before the resumes read the stream.
	natsconn.OnDisconnect(nc, h.freezeAll)
	natsconn.OnAsyncError(nc, func(sub *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrSlowConsumer) {
			h.onSlowConsumer(sub)
		}
	})
	natsconn.OnReconnect(nc, func() {
		g.reconnects.Add(1)
		time.AfterFunc(resumeCloseDelay, func() {
			m.resumeCloses.Add(float64(h.closeAll(chat.CloseResume, "nats connection interrupted: resume")))
		})
	})
	for _, o := range strings.Split(cfg.Origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			g.origins[o] = true
		}
	}
	g.ready = ops.Setup(ctx, log, "jetstream", setupRetry, func(ctx context.Context) error {
		stream, err := chat.EnsureStream(ctx, js, cfg.Stream)
		if err != nil {
			return err
		}
		pkv, err := chat.EnsurePresenceBucket(ctx, js, cfg.Presence)
		if err != nil {
			return err
		}
		revokedKV, err := chat.EnsureRevokedBucket(ctx, js, cfg.Stream.Replicas)
		if err != nil {
			return err
		}
		reg, err := presencekv.New(pkv, gatewayID)
		if err != nil {
			return err
		}
		// Last: a setup that fails after it would leave a watch running.
		revoked, err := watchRevocations(ctx, log, revokedKV, h.closeToken)
		if err != nil {
			return err
		}
		g.stream, g.revoked, g.presence = stream, revoked, reg
		go heartbeat(ctx, log, reg, cfg.Heartbeat)
		return nil
	}, isConflict, fail)
	// Auth's keys: a gateway without them can open no socket (503), so it
	// is not ready until it has them. Once loaded they are kept, so auth
	// going down later leaves the gateway ready and its sockets open.
	keys := ops.Setup(ctx, log, "auth keys", setupRetry, func(ctx context.Context) error {
		return fetchKeys(ctx, nc, g.verifier)
	}, func(error) bool { return false }, fail)
	go refreshKeys(ctx, log, nc, g.verifier)
	go h.syncPresence(ctx)
	ops.Profiling(ctx, log, cfg.PprofAddr)

	authURL, _ := url.Parse(cfg.AuthURL) // checked in parseConfig
	handler := newServer(log, reg, newAPIProxy(log, authURL, cfg.Proxies), g, []ops.Check{
		{Name: "nats", Run: natsconn.Ready(nc)},
		g.ready.Check(),
		keys.Check(),
	})
	err = ops.ListenAndServe(ctx, log, cfg.HTTPAddr, handler)
	// Sockets are hijacked connections: the HTTP shutdown leaves them to us.
	g.stopSockets(2 * time.Second)
	if err != nil {
		return err
	}
	if err := ops.Cause(ctx); err != nil {
		return err
	}
	log.Info("gateway stopped")
	return nil
}

// parsePrefixes reads comma-separated addresses and CIDRs.
func parsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// maxMessageFrame bounds the encoded delivery frame of a message of
// chars characters: each may take 6 bytes once escaped (\u003c), plus
// the frame's other fields (ids, names, time) with room to spare.
func maxMessageFrame(chars int) int { return 6*chars + 1024 }

// resumeCloseDelay is how long after a NATS reconnect the gateway closes
// the sockets opened before it, for resume.
const resumeCloseDelay = 500 * time.Millisecond

func isConflict(err error) bool { return errors.Is(err, chat.ErrConfigConflict) }

// heartbeat refreshes the gateway's presence entries every period.
func heartbeat(ctx context.Context, log *slog.Logger, reg *presencekv.Registry, period time.Duration) {
	ops.Every(ctx, period, func(ctx context.Context) {
		lost, err := reg.Heartbeat(ctx)
		if err != nil && ctx.Err() == nil {
			log.Warn("presence heartbeat failed", "err", err)
		}
		if lost > 0 {
			log.Warn("presence entries had expired; their sockets are closed", "sockets", lost)
		}
	})
}
