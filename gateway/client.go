package main

import (
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/token"
)

// Per-socket timing and batching.
const (
	// writeWait bounds one write to a socket.
	writeWait = 10 * time.Second
	// maxWriteDelay bounds WRITE_DELAY: it is latency every message pays.
	maxWriteDelay = 100 * time.Millisecond
	// maxBatch bounds the objects coalesced into one server frame.
	maxBatch = 128
)

// client is one websocket connection: one goroutine reads (readPump);
// what the server sends goes through a bounded queue, written by the
// gateway's flusher (see flush.go): an idle socket costs one goroutine,
// a busy one no more.
type client struct {
	id     string
	user   chat.User
	claims *token.Claims
	conn   *websocket.Conn // reads; its writes are dropped (hijackGuard)
	tcp    net.Conn        // the connection under conn: the flusher writes here
	raw    syscall.RawConn // tcp's socket, for the flusher's non-blocking writes
	gw     *gateway

	// queue holds encoded frame objects (shared, never modified) for the
	// flusher, at most gw.limits.QueueLen of them and QueueBytes in all
	// (qbytes); a full queue means the client is too slow. A slice grown
	// on demand rather than a channel of QueueLen slots: an idle socket
	// holds no queue memory, and a write takes everything queued at once.
	// qmu guards queue, qbytes, spare, writing, pingDue and pong.
	qmu     sync.Mutex
	queue   [][]byte
	qbytes  int
	spare   [][]byte // the last written slice, reused when small
	writing bool     // a write is under way or in line; stays set once the socket's writes end
	pingDue bool
	pong    []byte        // a pong to send (its payload), when not nil
	room    chan struct{} // (cap 1) a write took the queue
	pinger  *time.Timer   // sets pingDue every PingInterval

	closing    chan struct{} // closed by closeWith
	writerDone chan struct{} // closed when the socket's writes have ended
	closeOnce  sync.Once
	closeCode  int // set once, before closing closes
	closeText  string

	// sendSlots (cap maxSendsInFlight) holds one token per send waiting
	// for the stream (see handleSend).
	sendSlots chan struct{}

	limiter *rate.Limiter
	strikes int  // rate-limited frames in a row; reader goroutine only
	started bool // a first frame was read; reader goroutine only

	// Live delivery starts held: a reconnecting client's first frame is
	// resume, whose replay must come before anything live. mu guards state
	// and held.
	mu        sync.Mutex
	state     int
	held      []heldMsg
	heldBytes int
	// floor is the last seq a replay sent: a stored message reaches the
	// replay's consumer and the live subscription independently, so its
	// live copy may come after the replay, and is dropped.
	floor uint64

	// frozen: NATS went away while this socket was open; it gets no more
	// live messages and is closed for resume (4011).
	frozen atomic.Bool

	// When the socket was last written to, and the running average of
	// the time between its writes (kept with WRITE_DELAY only).
	lastWrite time.Time
	writeGap  time.Duration

	// The presence batch the socket joined during, and how many bytes of
	// its changes it was given at join; under hub.mu.
	presBatch uint64
	presSeen  int
}

// Sends waiting for the stream at once: per socket, and per gateway (past
// that, a send waits briefly, then is refused with unavailable).
const (
	maxSendsInFlight  = 32
	maxStoresInFlight = 16384
)

// pendingSend is a send published to the stream, waiting for its ack.
type pendingSend struct {
	c     *client
	id    string
	start time.Time
}

// sendAcks answers the sends waiting for the stream. The JetStream context
// calls stored or failed for each (from its reply handler, or its timeout
// after publishTimeout), so no goroutine waits per send; the stream acks
// one socket's sends in the order they were stored.
type sendAcks struct {
	mu      sync.Mutex
	pending map[*nats.Msg]pendingSend
}

func newSendAcks() *sendAcks { return &sendAcks{pending: map[*nats.Msg]pendingSend{}} }

// add registers p for m before m is published: its ack may come first.
func (a *sendAcks) add(m *nats.Msg, p pendingSend) {
	a.mu.Lock()
	a.pending[m] = p
	a.mu.Unlock()
}

// take removes m's send and frees its slot.
func (a *sendAcks) take(m *nats.Msg) (pendingSend, bool) {
	a.mu.Lock()
	p, ok := a.pending[m]
	delete(a.pending, m)
	a.mu.Unlock()
	if ok {
		<-p.c.sendSlots
	}
	return p, ok
}

// stored acks a send with its stream sequence.
func (a *sendAcks) stored(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
	if p, ok := a.take(m); ok {
		p.c.gw.metrics.publishWait.Observe(time.Since(p.start).Seconds())
		p.c.reply(chat.AckFrame{Type: chat.FrameAck, ID: p.id, Seq: ack.Sequence})
	}
}

// failed refuses a send the stream did not store; the client retries
// with the same id, stored at most once.
func (a *sendAcks) failed(_ jetstream.JetStream, m *nats.Msg, err error) {
	if p, ok := a.take(m); ok {
		p.c.gw.log.Warn("publish failed", "subject", m.Subject, "err", err)
		p.c.reply(errorFrame(p.id, chat.CodeUnavailable, "could not store the message; retry with the same id"))
	}
}

// Delivery states of a client.
const (
	stateHolding   = iota // live messages held until the first frame or holdTimeout
	stateReplaying        // resume replay running; live messages still held
	stateLive             // live messages go straight to the queue
)

type heldMsg struct {
	b   []byte
	seq uint64
}

// holdTimeout is how long after hello live messages wait for a possible
// resume; any first frame ends the wait sooner.
const holdTimeout = time.Second

// deliver queues a live message, or holds it while a replay may precede it.
// Holding is bounded by the queue length: a holding client (not yet sent
// its first frame) that would exceed it goes live instead; a replaying one
// is too slow.
func (c *client) deliver(b []byte, seq uint64, sched *[]*client) {
	if c.frozen.Load() {
		return // it resumes from before the gap instead
	}
	c.mu.Lock()
	if c.state == stateHolding && c.heldFull(b) {
		c.mu.Unlock()
		c.goLive(0, stateHolding)
		c.mu.Lock()
	}
	if seq <= c.floor {
		c.mu.Unlock()
		return
	}
	if c.state != stateLive {
		if c.heldFull(b) {
			c.mu.Unlock()
			c.tooSlow()
			return
		}
		c.held = append(c.held, heldMsg{b: b, seq: seq})
		c.heldBytes += len(b)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.enqueue(b, sched)
}

// heldFull says whether holding b too would pass the queue's limits, in
// objects or in bytes (c.mu held).
func (c *client) heldFull(b []byte) bool {
	return len(c.held) >= c.gw.limits.QueueLen || c.heldBytes+len(b) > c.gw.limits.QueueBytes
}

// goLive releases the held messages with a seq above after and delivers
// live from then on, if the client is still in state from.
func (c *client) goLive(after uint64, from int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != from {
		return false
	}
	for _, h := range c.held {
		if h.seq > after {
			c.enqueue(h.b, nil)
		}
	}
	c.held, c.heldBytes, c.state, c.floor = nil, 0, stateLive, after
	return true
}

// beginResume moves a holding client to replaying; false once live.
func (c *client) beginResume() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateHolding {
		return false
	}
	c.state = stateReplaying
	return true
}

// readPump reads client frames until the socket fails or closes; it is
// the only reader. Frames over the read limit make gorilla answer 1009.
func (c *client) readPump() {
	c.conn.SetReadLimit(c.gw.limits.MaxFrameBytes)
	pongWait := c.gw.limits.PingInterval * 2
	_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(pongWait))
	})
	for {
		typ, data, err := c.conn.ReadMessage()
		if err != nil {
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				c.gw.metrics.errors.WithLabelValues("frame_too_big").Inc()
				c.closeWith(websocket.CloseMessageTooBig, "frame too big")
			case isProtocolError(err):
				c.gw.metrics.errors.WithLabelValues("protocol_error").Inc()
				c.closeWith(websocket.CloseProtocolError, "protocol error")
			default: // the client closed (its code is echoed) or went away
				c.closeWith(websocket.CloseNormalClosure, "")
			}
			return
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
		if isClosed(c.closing) {
			continue // its answers would go nowhere: no work for it
		}
		if !c.admit() {
			continue // refused; a flooding client's socket is closing
		}
		if typ != websocket.TextMessage {
			c.reply(errorFrame("", chat.CodeBadFrame, "frames are JSON text"))
			continue
		}
		c.gw.handleFrame(c, data)
	}
}

// isProtocolError tells gorilla's protocol errors (a frame the protocol
// forbids: bad opcode or bits, unmasked, a bad close) from the
// connection's own: gorilla makes them as plain errors saying
// "websocket: ...", where a close from the client is a *CloseError and a
// network failure a net error.
func isProtocolError(err error) bool {
	var ce *websocket.CloseError
	var ne net.Error
	return !errors.As(err, &ce) && !errors.As(err, &ne) && strings.HasPrefix(err.Error(), "websocket: ")
}

// admit charges one frame to the rate limit. Over it, the frame is refused
// with rate_limited; after FloodStrikes refusals in a row the socket is
// closed, since the client is not listening.
func (c *client) admit() bool {
	if c.limiter.Allow() {
		c.strikes = 0
		return true
	}
	c.strikes++
	if c.strikes >= c.gw.limits.FloodStrikes {
		c.gw.metrics.errors.WithLabelValues("flooding").Inc()
		c.closeWith(chat.CloseFlooding, "flooding: kept sending over the rate limit")
		return false
	}
	c.reply(errorFrame("", chat.CodeRateLimited, "over the send rate; slow down"))
	return false
}

// reply queues a frame for this client alone.
func (c *client) reply(frame any) {
	if e, ok := frame.(chat.ErrorFrame); ok {
		c.gw.metrics.errors.WithLabelValues(e.Code).Inc()
	}
	c.enqueue(chat.Encode(frame), nil)
}

func errorFrame(id, code, message string) chat.ErrorFrame {
	return chat.ErrorFrame{Type: chat.FrameError, ID: id, Code: code, Message: message}
}
