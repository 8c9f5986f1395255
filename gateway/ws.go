package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/natter/natter/gateway/wsconn"
	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/ops"
	"github.com/natter/natter/services/presencekv"
	"github.com/natter/natter/services/token"
)

// Timing of the gateway's NATS requests.
const (
	// publishTimeout bounds the wait for the stream to store a message.
	publishTimeout = 5 * time.Second
	// lookupTimeout bounds a recipient lookup at auth.
	lookupTimeout = 2 * time.Second
	// knownUserTTL is how long a recipient found at auth is remembered.
	knownUserTTL = 10 * time.Minute
)

// WSLimits are the per-socket limits, each a flag.
type WSLimits struct {
	MaxFrameBytes  int64         // bigger client frames close the socket with 1009
	MaxTextChars   int           // longest message text, in characters
	SendRate       float64       // client frames per second, sustained, per socket
	SendBurst      int           // client frames allowed at once above the rate
	FloodStrikes   int           // rate-limited frames in a row before close 4008
	QueueLen       int           // queued server objects before close 4009
	QueueBytes     int           // queued server bytes before close 4009
	SocketsPerUser int           // open sockets per user, on all gateways; more are refused with 429
	HistoryBytes   int           // largest history answer's messages, in bytes; a page is cut there (more: true)
	HistoryCost    int           // rate-limit tokens one history request takes (a send takes one)
	PingInterval   time.Duration // ping period; a socket silent for two is dropped
	MaxReplay      int           // messages one resume replays at most
	WriteDelay     time.Duration // a busy socket waits out this long since its last write (0: no delay; see flush)
}

// gateway is the websocket side: verification, the hub, the send path.
type gateway struct {
	log      *slog.Logger
	nc       *nats.Conn
	js       jetstream.JetStream
	verifier *token.Verifier
	hub      *hub
	slots    *socketSlots // sockets per user here, open or opening
	acks     *sendAcks
	limits   WSLimits
	origins  map[string]bool // allowed Origin values; empty: same host only
	metrics  *metrics

	// Set by setup before ready opens.
	ready    *ops.Gate
	stream   jetstream.Stream
	revoked  *revocations
	presence *presencekv.Registry

	known   sync.Map // user id -> time found at auth
	sockets *wsconn.Server

	seqMu      sync.Mutex // guards seqNext, seqRunning
	seqNext    *seqFetch  // the next stream info request and its waiters
	seqRunning bool       // fetchSeqs is running

	// reconnects counts NATS reconnects: a socket admitted across one
	// may have missed what its 4011 close was for.
	reconnects atomic.Uint64

	// Sockets are hijacked: the HTTP server's shutdown does not wait for
	// them. stopping (under mu) refuses new ones, so clients.Add never
	// races the final Wait.
	mu       sync.Mutex
	stopping bool
	clients  sync.WaitGroup
}

// helloSeq is the stream's last sequence, from a stream info request that
// started after the call: concurrent handshakes share one request (one
// per round trip, not one per socket) and none gets a value older than
// its own arrival.
func (g *gateway) helloSeq(ctx context.Context) (uint64, error) {
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

// seqTimeout bounds one stream info request of helloSeq.
const seqTimeout = 5 * time.Second

// fetchSeqs runs the pending fetch, then the one queued meanwhile, until
// none is waiting.
func (g *gateway) fetchSeqs() {
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
		info, err := g.stream.Info(ctx)
		cancel()
		if err == nil {
			f.seq = info.State.LastSeq
		}
		f.err = err
		close(f.done)
	}
}

// admitSocket registers c (hub, presence) unless the gateway is stopping.
// Only the stopping check holds g.mu: the presence entry and the user's
// subscriptions are NATS round trips, and holding the lock across them
// made every handshake of the gateway wait for the one before.
func (g *gateway) admitSocket(c *client, hello []byte) error {
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
	if g.revoked.has(c.claims.ID) {
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
func (g *gateway) dropSocket(c *client) {
	g.hub.leave(c)
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	if err := g.presence.Remove(ctx, c.user.ID, c.id); err != nil {
		g.log.Warn("presence remove failed; the entry will expire", "err", err)
	}
	g.slots.give(c.user.ID)
	g.clients.Done()
}

// stopSockets closes every socket with 1001 and waits for them, at most d.
func (g *gateway) stopSockets(d time.Duration) {
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

type metrics struct {
	sockets      prometheus.Gauge
	framesIn     *prometheus.CounterVec
	objectsOut   prometheus.Counter
	errors       *prometheus.CounterVec
	slowCloses   prometheus.Counter
	resumeCloses prometheus.Counter
	publishWait  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sockets:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "gateway_sockets_open", Help: "Websockets open on this gateway."}),
		framesIn:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_frames_in_total", Help: "Client frames by type."}, []string{"type"}),
		objectsOut:   prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_objects_out_total", Help: "Server frame objects written to sockets (several may share one frame)."}),
		errors:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_errors_total", Help: "Error frames and forced closes by code."}, []string{"code"}),
		slowCloses:   prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_slow_closes_total", Help: "Sockets closed because their send queue filled (4009)."}),
		resumeCloses: prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_resume_closes_total", Help: "Sockets closed to resume after a NATS reconnect (4011)."}),
		publishWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gateway_publish_ack_seconds", Help: "From publishing a message to the stream's ack.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	reg.MustRegister(m.sockets, m.framesIn, m.objectsOut, m.errors, m.slowCloses, m.resumeCloses, m.publishWait)
	return m
}

// serveWS checks origin, token and revocation, all before upgrading, then
// runs the socket until it closes.
func (g *gateway) serveWS(w http.ResponseWriter, r *http.Request) {
	if !g.originAllowed(r) {
		writeError(w, http.StatusForbidden, "forbidden_origin", "this origin may not open a chat socket")
		return
	}
	if !g.ready.IsOpen() || !g.verifier.HasKeys() {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the gateway is starting; try again shortly")
		return
	}
	raw := token.FromRequest(r, chat.TokenCookie)
	if raw == "" {
		writeError(w, http.StatusUnauthorized, "unauthorized", "log in first")
		return
	}
	claims, err := g.verifier.Verify(raw)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "unauthorized", "invalid or expired token; log in again")
		return
	}
	if g.revoked.has(claims.ID) {
		writeError(w, http.StatusUnauthorized, "unauthorized", "token revoked; log in again")
		return
	}
	if !g.roomForSocket(r.Context(), claims.Subject) {
		g.metrics.errors.WithLabelValues("too_many_sockets").Inc()
		writeError(w, http.StatusTooManyRequests, "too_many_sockets",
			fmt.Sprintf("at most %d open sockets per user: close a tab or device first", g.limits.SocketsPerUser))
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
		writeError(w, http.StatusServiceUnavailable, "unavailable", "message store unreachable; try again shortly")
		return
	}
	conn, err := g.sockets.Upgrade(w, r)
	if err != nil {
		return // the client had its answer
	}
	c := &client{
		id: newConnID(), user: chat.User{ID: claims.Subject, Name: claims.Name}, claims: claims, conn: conn, gw: g,
		sendSlots: make(chan struct{}, maxSendsInFlight),
		limiter:   rate.NewLimiter(rate.Limit(g.limits.SendRate), g.limits.SendBurst),
	}
	hello := chat.Encode(chat.HelloFrame{
		Type: chat.FrameHello, User: c.user, Rooms: []string{chat.Lobby}, Seq: lastSeq,
		Limits: chat.Limits{MaxTextChars: g.limits.MaxTextChars, MaxFrameBytes: int(g.limits.MaxFrameBytes), SendRate: g.limits.SendRate, SendBurst: g.limits.SendBurst},
	})
	if err := g.admitSocket(c, hello); err != nil {
		g.log.Warn("socket refused after upgrade", "err", err)
		conn.Close(websocket.CloseTryAgainLater, "try again")
		return
	}
	admitted = true
	// Live messages wait for a possible resume no longer than holdTimeout.
	hold := time.AfterFunc(holdTimeout, func() { c.goLive(0, stateHolding) })
	// The socket ends when its token does.
	expiry := time.AfterFunc(time.Until(claims.ExpiresAt.Time), func() { c.conn.Close(chat.CloseTokenExpired, "token expired; log in again") })
	// The socket lives on goroutines of its own: the HTTP handler's, deep
	// in net/http with a stack grown by the handshake, ends here, which
	// keeps an idle socket's memory small.
	go func() {
		defer g.dropSocket(c)
		defer hold.Stop()
		defer expiry.Stop()
		c.readPump()
		<-conn.Done()
	}()
}

// originAllowed accepts requests without Origin (not a browser), and
// browsers whose Origin is allowed: by default only the gateway's own host.
func (g *gateway) originAllowed(r *http.Request) bool {
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

func newConnID() string {
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// handleFrame decodes one client frame and acts on it; every refusal is an
// error frame and the socket stays open.
func (g *gateway) handleFrame(c *client, data []byte) {
	f, ferr := decodeFrame(data)
	if ferr != nil {
		g.metrics.framesIn.WithLabelValues("invalid").Inc()
		c.reply(*ferr)
		return
	}
	g.metrics.framesIn.WithLabelValues(f.Type).Inc()
	first := !c.started
	c.started = true
	if f.Type == chat.FrameResume {
		if first {
			g.handleResume(c, f)
		} else {
			c.reply(errorFrame(f.ID, chat.CodeResumeLate, "resume must be the first frame"))
		}
		return
	}
	if first {
		c.goLive(0, stateHolding) // not resuming: no need to hold live messages
	}
	switch f.Type {
	case chat.FrameSend:
		g.handleSend(c, f)
	case chat.FrameHistory:
		g.handleHistory(c, f)
	}
}

// decodeFrame parses a client frame and checks its type is known.
func decodeFrame(data []byte) (chat.ClientFrame, *chat.ErrorFrame) {
	var f chat.ClientFrame
	if err := json.Unmarshal(data, &f); err != nil {
		// A field of the wrong type leaves the others decoded: the id, when
		// it was a string, says which frame failed.
		e := errorFrame(f.ID, chat.CodeBadFrame, "not a JSON object of the protocol: "+jsonProblem(err))
		return f, &e
	}
	switch f.Type {
	case chat.FrameSend, chat.FrameHistory, chat.FrameResume:
		return f, nil
	case "":
		e := errorFrame(f.ID, chat.CodeMissingField, `every frame needs a "type"`)
		return f, &e
	default:
		e := errorFrame(f.ID, chat.CodeUnknownType, fmt.Sprintf("unknown frame type %q", f.Type))
		return f, &e
	}
}

func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Sprintf("field %q must be a %s", te.Field, te.Type)
	}
	return "invalid JSON"
}

// checkSend checks a send's shape: id, recipient, text. Whether a user
// recipient exists is destination's business.
func checkSend(f chat.ClientFrame, maxText int) *chat.ErrorFrame {
	switch {
	case f.ID == "":
		return refusal("", chat.CodeMissingField, `send needs an "id"`)
	case chat.ValidID(f.ID) != nil:
		return refusal(f.ID, chat.CodeBadID, "message id: "+chat.ValidID(f.ID).Error()) // echoed, so the client can tell which send
	}
	if e := checkTo(f.ID, f.To); e != nil {
		return e
	}
	if strings.TrimFunc(f.Text, unicode.IsSpace) == "" {
		return refusal(f.ID, chat.CodeEmptyText, "text is empty")
	}
	if n := utf8.RuneCountInString(f.Text); n > maxText {
		return refusal(f.ID, chat.CodeTextTooLong, fmt.Sprintf("text has %d characters; the limit is %d", n, maxText))
	}
	return nil
}

// checkTo checks a conversation's "to" (of a send or a history request):
// exactly one of a room the user is in (the lobby) and a valid user id.
func checkTo(id string, to *chat.To) *chat.ErrorFrame {
	switch {
	case to == nil:
		return refusal(id, chat.CodeMissingField, `"to" is required: {"room": ...} or {"user": ...}`)
	case (to.Room == "") == (to.User == ""):
		return refusal(id, chat.CodeBadRecipient, `"to" names exactly one of "room" and "user"`)
	case to.User != "" && chat.ValidID(to.User) != nil:
		return refusal(id, chat.CodeBadID, "recipient: "+chat.ValidID(to.User).Error())
	case to.Room != "" && to.Room != chat.Lobby:
		return refusal(id, chat.CodeUnknownRoom, fmt.Sprintf("no room %q here", to.Room))
	}
	return nil
}

// conversationSubject is the subject of user's conversation to, which
// checkTo accepted: the room's, or the direct one with to.User.
func conversationSubject(user string, to *chat.To) string {
	var s string
	if to.Room != "" {
		s, _ = chat.RoomSubject(to.Room)
	} else {
		s, _ = chat.DMSubject(user, to.User)
	}
	return s
}

func refusal(id, code, message string) *chat.ErrorFrame {
	e := errorFrame(id, code, message)
	return &e
}

// handleSend validates a send and stores it; the ack (with its sequence)
// follows when the stream confirms. The sender is the token's user,
// whatever the frame says.
//
// Stores are pipelined: up to maxSendsInFlight of a socket's sends wait
// for the stream at once, published in the order they were read, so
// stored and acked in that order when they succeed. A send that fails
// (the client retries it) or that the client library republishes (no
// stream leader for a moment) may be stored after the sends that followed
// it; its seq says where. Past the bound the reader waits, which holds
// the client back through TCP.
func (g *gateway) handleSend(c *client, f chat.ClientFrame) {
	if e := checkSend(f, g.limits.MaxTextChars); e != nil {
		c.reply(*e)
		return
	}
	subject, e := g.destination(c, f.To)
	if e != nil {
		e.ID = f.ID
		c.reply(*e)
		return
	}
	m := chat.Message{ID: f.ID, From: c.user, To: *f.To, Text: f.Text, TS: time.Now().UTC()}
	select {
	case c.sendSlots <- struct{}{}:
	case <-c.conn.Closing():
		return // nobody to ack; the client retries with the same id
	}
	msg := &nats.Msg{Subject: subject, Data: chat.Encode(m)}
	g.acks.add(msg, pendingSend{c: c, id: f.ID, start: time.Now()})
	// The dedupe key is the sender's id with theirs: a retry is stored once,
	// and two users' ids never collide.
	if _, err := g.js.PublishMsgAsync(msg, jetstream.WithMsgID(c.user.ID+":"+f.ID)); err != nil {
		if _, ok := g.acks.take(msg); ok {
			g.log.Warn("publish failed", "subject", subject, "err", err)
			c.reply(errorFrame(f.ID, chat.CodeUnavailable, "could not store the message; retry with the same id"))
		}
	}
}

// destination is the subject of a checked send, once a user recipient is
// known to exist.
func (g *gateway) destination(c *client, to *chat.To) (string, *chat.ErrorFrame) {
	if to.User != "" && to.User != c.user.ID {
		exists, err := g.userExists(to.User)
		if err != nil {
			g.log.Warn("recipient lookup failed", "err", err)
			return "", refusal("", chat.CodeUnavailable, "cannot check the recipient now; retry")
		}
		if !exists {
			return "", refusal("", chat.CodeUnknownRecipient, fmt.Sprintf("no user %q", to.User))
		}
	}
	return conversationSubject(c.user.ID, to), nil
}

// userExists says whether id is a user: yes if the hub sees them (online,
// or with a socket here), or known from an earlier lookup; otherwise it
// asks auth (auth.users.get) and remembers the users it finds for
// knownUserTTL.
func (g *gateway) userExists(id string) (bool, error) {
	if g.hub.seesUser(id) {
		return true, nil
	}
	if t, ok := g.known.Load(id); ok && time.Since(t.(time.Time)) < knownUserTTL {
		return true, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	var resp chat.UsersGetResponse
	if err := natsconn.RequestJSON(ctx, g.nc, chat.AuthUsersGetSubject, chat.UsersGetRequest{IDs: []string{id}}, &resp); err != nil {
		return false, err
	}
	for _, u := range resp.Users {
		if u.ID == id {
			g.known.Store(id, time.Now())
			return true, nil
		}
	}
	return false, nil
}
