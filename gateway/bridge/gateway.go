// Package bridge is the chat side of the gateway: it admits websockets
// (token, origin, per-user limits), reads the clients' frames (send,
// history, resume, read, typing, conversations), stores sends in the CHAT
// stream within each user's quotas, and delivers what the stream stores
// to every local socket that may see it, with presence, revocations, read
// cursors and the conversation list. Sockets themselves are wsconn's.
package bridge

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/natter/natter/gateway/quota"
	"github.com/natter/natter/gateway/wsconn"
	"github.com/natter/natter/services/authclient"
	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/ops"
	"github.com/natter/natter/services/presencekv"
	"github.com/natter/natter/services/token"
)

// publishTimeout bounds the wait for the stream to store a message.
const publishTimeout = 5 * time.Second

// Config is what a Gateway serves with.
type Config struct {
	Limits    Limits
	Origins   []string // Origin values allowed to open a socket; empty: same host only
	Stream    chat.StreamOptions
	Presence  chat.PresenceOptions
	Heartbeat time.Duration // presence refresh period
}

// Gateway serves the chat websocket (/ws): New, then Start on a NATS
// connection made with JetStreamOptions, then ServeHTTP until Shutdown.
type Gateway struct {
	id        string // this gateway's presence id
	log       *slog.Logger
	cfg       Config
	nc        *nats.Conn
	js        jetstream.JetStream
	verifier  *token.Verifier
	auth      *authclient.Client
	hub       *hub
	slots     *socketSlots // sockets per user here, open or opening
	acks      *sendAcks
	sentReads *sentReads    // senders' cursors to move (sending is reading)
	listings  chan struct{} // (cap maxListings) conversation listings under way
	limits    Limits
	origins   map[string]bool // allowed Origin values; empty: same host only
	metrics   *metrics
	sockets   *wsconn.Server

	// Set by Start; ready opens when setup is done, keys when auth's keys
	// are loaded.
	ready, keys *ops.Gate
	stream      jetstream.Stream
	revoked     *revocations
	presence    *presencekv.Registry
	cursors     cursors      // read cursors
	rooms       roomStore    // rooms, members, each user's rooms
	roomDir     *roomDir     // every room's metadata, from a watch
	members     memberCache  // rooms' member lists, for a few seconds
	sendQuota   *quota.Meter // sends per user per minute
	byteQuota   *quota.Meter // stored bytes per user per hour
	inviteQuota *quota.Meter // invites per user per hour

	seqMu      sync.Mutex // guards seqNext, seqRunning
	seqNext    *seqFetch  // the next stream info request and its waiters
	seqRunning bool       // fetchSeqs is running

	// reconnects counts NATS reconnects: a socket admitted across one
	// may have missed the catch-up after it (see catchup.go).
	reconnects atomic.Uint64

	// Sockets are hijacked: the HTTP server's shutdown does not wait for
	// them. stopping (under mu) refuses new ones, so clients.Add never
	// races the final Wait.
	mu       sync.Mutex
	stopping bool
	clients  sync.WaitGroup
}

// New makes a gateway that registers its metrics with reg.
func New(log *slog.Logger, reg prometheus.Registerer, cfg Config) *Gateway {
	m := newMetrics(reg)
	id := newConnID()
	g := &Gateway{
		id: id, log: log.With("gateway", id), cfg: cfg, verifier: token.NewVerifier(), acks: newSendAcks(), sentReads: newSentReads(), listings: make(chan struct{}, maxListings),
		slots: newSocketSlots(cfg.Limits.SocketsPerUser), limits: cfg.Limits, origins: map[string]bool{}, metrics: m,
		sockets: wsconn.NewServer(wsconn.Options{
			ReadLimit: int64(cfg.Limits.MaxFrameBytes), QueueLen: cfg.Limits.QueueLen, QueueBytes: cfg.Limits.QueueBytes,
			PingInterval: cfg.Limits.PingInterval, WriteDelay: cfg.Limits.WriteDelay, Workers: runtime.GOMAXPROCS(0),
			TooSlowCode: chat.CloseTooSlow, TooSlowReason: "too slow: send queue full",
			OnWrite:   func(n int) { m.objectsOut.Add(float64(n)) },
			OnTooSlow: m.slowCloses.Inc,
		}),
	}
	for _, o := range cfg.Origins {
		g.origins[o] = true
	}
	return g
}

// JetStreamOptions are the options the gateway's JetStream context needs:
// sends are stored asynchronously (see handleSend), answered by acks; one
// that gets no answer fails after publishTimeout.
func (g *Gateway) JetStreamOptions() []jetstream.JetStreamOpt {
	return []jetstream.JetStreamOpt{
		jetstream.WithPublishAsyncAckHandler(g.acks.stored),
		jetstream.WithPublishAsyncErrHandler(g.acks.failed),
		jetstream.WithPublishAsyncTimeout(publishTimeout),
		jetstream.WithPublishAsyncMaxPending(maxStoresInFlight),
	}
}

// Start subscribes the hub and starts, in the background, the setup of
// the stream and buckets and the loading of auth's keys (see Checks); a
// setup that cannot succeed ends the service through fail.
func (g *Gateway) Start(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, fail context.CancelCauseFunc) error {
	g.nc, g.js = nc, js // before the hub's dispatcher, which reads the stream through g
	h, err := newHub(g.log, nc, g.metrics, g.limits, g.storedAt)
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	g.hub, g.auth = h, authclient.New(nc, authclient.Config{})
	g.watchConnection()
	// A silent node (cut off, paused) is left within 4-5 s, long before
	// the presence lease (two TTLs, 25 s) would say so; the hub catches
	// up after the reconnect, as after any.
	go natsconn.Watchdog(ctx, nc, natsconn.WatchdogPeriod, natsconn.WatchdogMisses, g.log)
	g.ready = ops.Setup(ctx, g.log, "jetstream", ops.SetupRetry, g.setup, ops.PermanentIs(chat.ErrConfigConflict), fail)
	// A gateway without auth's keys can open no socket (503), so it is
	// not ready until it has them. Once loaded they are kept, so auth
	// going down later leaves the gateway ready and its sockets open.
	g.keys = ops.Setup(ctx, g.log, "auth keys", ops.SetupRetry, func(ctx context.Context) error {
		return g.auth.FetchKeys(ctx, g.verifier)
	}, ops.PermanentIs(), fail)
	go g.auth.RefreshKeys(ctx, g.verifier, func(err error) {
		g.log.Warn("key refresh failed; keeping the known keys", "err", err)
	})
	go h.syncPresence(ctx)
	return nil
}

// watchConnection handles NATS going away. Core NATS does not redeliver
// what was published while the connection was down: once reconnected,
// the hub reads what it missed from the stream before it delivers
// anything newer (catchup.go).
func (g *Gateway) watchConnection() {
	natsconn.OnAsyncError(g.nc, func(sub *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrSlowConsumer) {
			g.hub.onSlowConsumer(sub)
		}
	})
	natsconn.OnReconnect(g.nc, func() { g.reconnects.Add(1) })
}

// setup creates or checks the stream and buckets, then starts the
// presence heartbeat and the revocation watch.
func (g *Gateway) setup(ctx context.Context) error {
	stream, err := chat.EnsureStream(ctx, g.js, g.cfg.Stream)
	if err != nil {
		return err
	}
	pkv, err := chat.EnsurePresenceBucket(ctx, g.js, g.cfg.Presence)
	if err != nil {
		return err
	}
	revokedKV, err := chat.EnsureRevokedBucket(ctx, g.js, g.cfg.Stream.Replicas)
	if err != nil {
		return err
	}
	quotaKV, err := chat.EnsureQuotaBucket(ctx, g.js, g.cfg.Stream.Replicas)
	if err != nil {
		return err
	}
	readKV, err := chat.EnsureReadStateBucket(ctx, g.js, g.cfg.Stream.Replicas)
	if err != nil {
		return err
	}
	roomsKV, err := chat.EnsureRoomsBucket(ctx, g.js, g.cfg.Stream.Replicas)
	if err != nil {
		return err
	}
	reg, err := presencekv.New(pkv, g.id)
	if err != nil {
		return err
	}
	// The watches come last, the rooms' stopped should the second fail:
	// a setup that fails after a watch started would leave it running.
	dir, err := watchRooms(ctx, g.log, roomsKV)
	if err != nil {
		return err
	}
	revoked, err := watchRevocations(ctx, g.log, revokedKV, g.hub.closeToken)
	if err != nil {
		dir.stop()
		return err
	}
	g.stream, g.revoked, g.presence, g.cursors = stream, revoked, reg, cursors{kv: readKV}
	g.rooms, g.roomDir = roomStore{kv: roomsKV, limits: g.limits.rooms(), log: g.log}, dir
	go g.moveSentReads(ctx)
	g.sendQuota = quota.NewMeter(quotaKV, "sends", time.Minute, int64(g.limits.UserSendsPerMinute))
	g.byteQuota = quota.NewMeter(quotaKV, "bytes", time.Hour, int64(g.limits.UserBytesPerHour))
	g.inviteQuota = quota.NewMeter(quotaKV, "invites", time.Hour, int64(g.limits.InvitesPerHour))
	// What was stored before now reaches a socket by its resume, not
	// by a catch-up.
	g.hub.noteSeq(stream.CachedInfo().State.LastSeq)
	g.hub.mu.Lock() // a catch-up may run already (a reconnect during setup)
	g.hub.loadRooms = g.rooms.roomsOfUser
	g.hub.readSince = g.readSince
	g.hub.mu.Unlock()
	g.hub.loadContacts = g.contacts
	g.hub.membersChanged = g.members.drop
	go heartbeat(ctx, g.log, reg, g.cfg.Heartbeat, func() { _ = g.nc.ForceReconnect() })
	return nil
}

// Checks are the gateway's readiness checks: setup done, auth's keys
// loaded (call after Start).
func (g *Gateway) Checks() []ops.Check { return []ops.Check{g.ready.Check(), g.keys.Check()} }

// ServeHTTP serves /ws.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.serveWS(w, r) }

// Shutdown closes every socket with 1001, waits for them at most d, then
// stops the writers and the hub's subscriptions.
func (g *Gateway) Shutdown(d time.Duration) {
	g.stopSockets(d)
	g.sockets.Close()

	if g.hub != nil {
		g.hub.close()
	}
}

// heartbeatRetryWait paces the retries of a failed presence refresh.
const heartbeatRetryWait = time.Second

// heartbeat refreshes the gateway's presence entries every period. A
// refresh that fails (the bucket electing a leader after a NATS node
// failed: 4 to 9 s) is tried again every heartbeatRetryWait until the
// next period: left to the next period, the lease came near its TTL,
// and one more miss lost it and closed every socket of the gateway.
//
// A lease given up because no refresh was answered for its lifetime means
// the NATS node this gateway uses is cut off while the connection looks
// open (nats.go's pings notice only after 4 minutes): reconnect, to
// another node, at once, or the clients that come back find the gateway
// still unable to serve them.
func heartbeat(ctx context.Context, log *slog.Logger, reg *presencekv.Registry, period time.Duration, reconnect func()) {
	ops.Every(ctx, period, func(ctx context.Context) {
		until := time.Now().Add(period - heartbeatRetryWait)
		for {
			lost, err := reg.Heartbeat(ctx)
			if lost > 0 {
				log.Warn("presence entries had expired; their sockets are closed", "sockets", lost)
			}
			if errors.Is(err, presencekv.ErrNoAnswers) {
				log.Warn("no answer from NATS for the presence lease's lifetime; reconnecting to another node")
				reconnect()
				return
			}
			if err == nil || ctx.Err() != nil {
				return
			}
			log.Warn("presence heartbeat failed", "err", err)
			if time.Now().After(until) {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(heartbeatRetryWait):
			}
		}
	})
}

// readSince reads every stored message above after, up to the stream's
// last seq, for the hub's catch-up (see catchup.go), as a socket's replay
// reads: by a consumer, or by message gets from the stream's leader
// while no consumer can be had.
func (g *Gateway) readSince(ctx context.Context, after uint64, filters []string, limit int, emit func(subject string, data []byte, seq uint64) error) (bool, error) {
	r := &replayRun{g: g, ctx: ctx, who: "catch-up", limit: limit, filters: func() []string { return filters }, emit: emit}
	_, _, cut, err := r.run(after)
	return cut, err
}

func newConnID() string {
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// stopSockets closes every socket with 1001 and waits for them, at most d.
func (g *Gateway) stopSockets(d time.Duration) {
	g.mu.Lock()
	g.stopping = true
	g.mu.Unlock()
	g.hub.closeAll(websocket.CloseGoingAway, "gateway shutting down")
	done := make(chan struct{})
	go func() {
		g.clients.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
	}
}
