package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/ops"
	"github.com/natter/natter/services/token"
)

// helloSeq is the stream's last sequence, from a stream info request that
// started after the call: concurrent handshakes share one request (one
// per round trip, not one per socket) and none gets a value older than
// its own arrival. One that arrives while a fetch is retrying waits for
// it and then for its own: up to twice seqTimeout while the stream has
// no leader.
func (g *Gateway) helloSeq(ctx context.Context) (uint64, error) {
	g.seqMu.Lock()
	if g.seqNext == nil {
		g.seqNext = &seqFetch{done: make(chan struct{})}
	}
	f := g.seqNext
	if !g.seqRunning {
		g.seqRunning = true
		go g.fetchSeqs()
	}
	g.seqMu.Unlock()
	select {
	case <-f.done:
		return f.seq, f.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// seqFetch is one stream info request and the handshakes waiting on it.
type seqFetch struct {
	done chan struct{}
	seq  uint64
	err  error
}

// seqTimeout bounds the stream info requests of one helloSeq fetch. A
// failed request is tried again within it, every storeRetryWait: the
// stream electing a leader after a NATS node failed (4 to 9 s) holds the
// handshakes until it has one, rather than refusing them with 503 and
// leaving the clients to their backoff, which added seconds after the
// leader was back.
const seqTimeout = 10 * time.Second

// fetchSeqs runs the pending fetch, then the one queued meanwhile, until
// none is waiting.
func (g *Gateway) fetchSeqs() {
	for {
		g.seqMu.Lock()
		f := g.seqNext
		g.seqNext = nil
		if f == nil {
			g.seqRunning = false
			g.seqMu.Unlock()
			return
		}
		g.seqMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), seqTimeout)
		info, err := streamInfo(ctx, g.stream)
		for err != nil && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(storeRetryWait):
				info, err = streamInfo(ctx, g.stream)
			}
		}
		cancel()
		if err == nil {
			f.seq = info.State.LastSeq
			g.hub.noteStream(f.seq)
		}
		f.err = err
		close(f.done)
	}
}

// admitSocket registers c (hub, presence) unless the gateway is stopping.
// Only the stopping check holds g.mu: the presence entry and the user's
// subscriptions are NATS round trips, and holding the lock across them
// made every handshake of the gateway wait for the one before.
func (g *Gateway) admitSocket(c *client, hello func(rooms []string) []byte) error {
	g.mu.Lock()
	if g.stopping {
		g.mu.Unlock()
		return errors.New("gateway stopping")
	}
	g.clients.Add(1) // stopSockets waits for this socket from now on
	g.mu.Unlock()
	reconnects := g.reconnects.Load()
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	if err := g.presence.Add(ctx, c.user.ID, c.id, func() {
		c.conn.Close(chat.ClosePresenceLost, "presence lost: reconnect")
	}); err != nil {
		g.clients.Done()
		return err
	}
	if err := g.hub.join(c, hello); err != nil {
		_ = g.presence.Remove(ctx, c.user.ID, c.id)
		g.clients.Done()
		return err
	}
	// Stopping began while this socket was joining: closeAll may have
	// missed it.
	g.mu.Lock()
	stopping := g.stopping
	g.mu.Unlock()
	if stopping {
		c.conn.Close(websocket.CloseGoingAway, "gateway shutting down")
	}
	// Revoked while this socket was joining (see revocations).
	if g.revoked.revokes(c.claims) {
		c.conn.Close(chat.CloseTokenRevoked, "token revoked")
	}
	// NATS reconnected while this socket was joining: the close for
	// resume may have missed it.
	if g.reconnects.Load() != reconnects {
		c.conn.Close(chat.CloseResume, "nats connection interrupted: resume")
	}
	return nil
}

// dropSocket undoes admitSocket.
func (g *Gateway) dropSocket(c *client) {
	g.hub.leave(c)
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	if err := g.presence.Remove(ctx, c.user.ID, c.id); err != nil {
		g.log.Warn("presence remove failed; the entry will expire", "err", err)
	}
	g.slots.give(c.user.ID)
	g.clients.Done()
}

// retryAfter is what a refused handshake is told to wait, in seconds: a
// gateway starting, or the stream failing over, takes about that.
const retryAfter = "2"

// serveWS checks origin, token and revocation, all before upgrading, then
// runs the socket until it closes.
func (g *Gateway) serveWS(w http.ResponseWriter, r *http.Request) {
	claims, ok := g.authorize(w, r)
	if !ok {
		return
	}
	// From here the slot is given back when the socket ends (dropSocket)
	// or when the handshake fails before it is admitted.
	admitted := false
	defer func() {
		if !admitted {
			g.slots.give(claims.Subject)
		}
	}()
	lastSeq, err := g.helloSeq(r.Context())
	if err != nil {
		w.Header().Set("Retry-After", retryAfter)
		ops.WriteError(w, http.StatusServiceUnavailable, "unavailable", "message store unreachable; try again shortly")
		return
	}
	conn, err := g.sockets.Upgrade(w, r)
	if err != nil {
		return // the client had its answer
	}
	c := &client{
		id: newConnID(), user: chat.User{ID: claims.Subject, Name: claims.Name, Account: claims.Account}, claims: claims, conn: conn, gw: g, floor: lastSeq,
		sendSlots: make(chan struct{}, MaxSendsInFlight),
		limiter:   rate.NewLimiter(rate.Limit(g.limits.SendRate), g.limits.SendBurst),
	}
	hello := func(rooms []string) []byte { return g.hello(c.user, lastSeq, rooms) }
	if err := g.admitSocket(c, hello); err != nil {
		g.log.Warn("socket refused after upgrade", "err", err)
		conn.Close(websocket.CloseTryAgainLater, "try again")
		return
	}
	admitted = true
	g.run(c)
}

// authorize checks origin, readiness, token, revocation and the user's
// sockets before the upgrade, answering a refusal itself; on success the
// user holds a socket slot.
func (g *Gateway) authorize(w http.ResponseWriter, r *http.Request) (*token.Claims, bool) {
	if !g.originAllowed(r) {
		ops.WriteError(w, http.StatusForbidden, "forbidden_origin", "this origin may not open a chat socket")
		return nil, false
	}
	if !g.ready.IsOpen() || !g.keys.IsOpen() {
		w.Header().Set("Retry-After", retryAfter)
		ops.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the gateway is starting; try again shortly")
		return nil, false
	}
	raw := token.FromRequest(r, chat.TokenCookie)
	if raw == "" {
		ops.WriteError(w, http.StatusUnauthorized, "unauthorized", "log in first")
		return nil, false
	}
	claims, err := g.verifier.Verify(raw)
	if err != nil {
		ops.WriteError(w, http.StatusUnauthorized, "unauthorized", "invalid or expired token; log in again")
		return nil, false
	}
	if g.revoked.revokes(claims) {
		ops.WriteError(w, http.StatusUnauthorized, "unauthorized", "token revoked; log in again")
		return nil, false
	}
	if !g.roomForSocket(r.Context(), claims.Subject) {
		g.metrics.errors.WithLabelValues("too_many_sockets").Inc()
		ops.WriteError(w, http.StatusTooManyRequests, "too_many_sockets",
			fmt.Sprintf("at most %d open sockets per user: close a tab or device first", g.limits.SocketsPerUser))
		return nil, false
	}
	return claims, true
}

// hello is a socket's first frame.
func (g *Gateway) hello(u chat.User, lastSeq uint64, rooms []string) []byte {
	return chat.Encode(chat.HelloFrame{
		Type: chat.FrameHello, User: u, Rooms: append([]string{chat.Lobby}, rooms...), Seq: lastSeq,
		Limits: chat.Limits{MaxTextChars: g.limits.MaxTextChars, MaxFrameBytes: g.limits.MaxFrameBytes, SendRate: g.limits.SendRate, SendBurst: g.limits.SendBurst},
	})
}

// run serves an admitted socket until it ends. It leaves no goroutine
// behind: the socket hands its frames to handle, and its end to the
// cleanup, from goroutines that live only while there is work (an idle
// socket's memory is then its state alone). The HTTP handler's goroutine,
// deep in net/http with a stack grown by the handshake, ends here.
func (g *Gateway) run(c *client) {
	// The conversations follow hello and the online list; reading them
	// takes stream round trips, so they come when ready.
	go g.sendConversations(c, "", 0)
	// Live messages wait for a possible resume no longer than HoldTimeout.
	hold := time.AfterFunc(chat.HoldTimeout, func() { c.goLive(0, stateHolding) })
	// The socket ends when its token does.
	expiry := time.AfterFunc(time.Until(c.claims.ExpiresAt.Time), func() { c.conn.Close(chat.CloseTokenExpired, "token expired; log in again") })
	c.conn.Serve(c.handle, func() {
		// Once, after the last frame was handled and the socket closed.
		expiry.Stop()
		hold.Stop()
		c.countClose()
		g.dropSocket(c)
	})
}

// originAllowed accepts requests without Origin (not a browser), and
// browsers whose Origin is allowed: by default only the gateway's own host.
func (g *Gateway) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if len(g.origins) > 0 {
		return g.origins[origin]
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}
