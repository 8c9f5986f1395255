package main

import (
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/token"
)

// Per-socket timing and batching.
const (
	// writeWait bounds one write to a socket.
	writeWait = 10 * time.Second
	// deadlineRefresh is how often a busy socket's write deadline moves.
	deadlineRefresh = time.Second
	// maxBatch bounds the objects coalesced into one server frame.
	maxBatch = 128
)

// client is one websocket connection, shaped like gorilla's chat example:
// one goroutine reads (readPump), one owns every write (writePump), and
// everyone else talks to it through its bounded send queue.
type client struct {
	id     string
	user   chat.User
	claims *token.Claims
	conn   *websocket.Conn
	gw     *gateway

	// send holds encoded frame objects (shared, never modified) for
	// writePump; a full queue means the client is too slow.
	send chan []byte

	closing   chan struct{} // closed by closeWith
	closeOnce sync.Once
	closeCode int // set once, before closing closes
	closeText string

	limiter *rate.Limiter
	strikes int  // rate-limited frames in a row; reader goroutine only
	started bool // a first frame was read; reader goroutine only

	// Live delivery starts held: a reconnecting client's first frame is
	// resume, whose replay must come before anything live. mu guards state
	// and held.
	mu    sync.Mutex
	state int
	held  []heldMsg
	// floor is the last seq a replay sent: a stored message reaches the
	// replay's consumer and the live subscription independently, so its
	// live copy may come after the replay, and is dropped.
	floor uint64

	// deadlineAt is when writePump last moved the write deadline.
	deadlineAt time.Time

	// The presence batch the socket joined during, and how many bytes of
	// its changes it was given at join; under hub.mu.
	presBatch uint64
	presSeen  int
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
func (c *client) deliver(b []byte, seq uint64) {
	c.mu.Lock()
	if c.state == stateHolding && len(c.held) >= cap(c.send) {
		c.mu.Unlock()
		c.goLive(0, stateHolding)
		c.mu.Lock()
	}
	if seq <= c.floor {
		c.mu.Unlock()
		return
	}
	if c.state != stateLive {
		if len(c.held) >= cap(c.send) {
			c.mu.Unlock()
			c.gw.metrics.slowCloses.Inc()
			c.closeWith(chat.CloseTooSlow, "too slow: send queue full")
			return
		}
		c.held = append(c.held, heldMsg{b: b, seq: seq})
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.enqueue(b)
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
			c.enqueue(h.b)
		}
	}
	c.held, c.state, c.floor = nil, stateLive, after
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

// enqueueWait queues b, waiting up to writeWait for room: a replay may
// outrun the writer for a moment without the client being slow.
func (c *client) enqueueWait(b []byte) bool {
	select {
	case c.send <- b:
		return true
	case <-c.closing:
		return false
	default:
	}
	t := time.NewTimer(writeWait)
	defer t.Stop()
	select {
	case c.send <- b:
		return true
	case <-c.closing:
		return false
	case <-t.C:
		c.gw.metrics.slowCloses.Inc()
		c.closeWith(chat.CloseTooSlow, "too slow: send queue full")
		return false
	}
}

// enqueue queues an encoded object without blocking; a client whose queue
// is full is closed as too slow, so it never holds anyone else up.
func (c *client) enqueue(b []byte) {
	select {
	case c.send <- b:
	case <-c.closing:
	default:
		c.gw.metrics.slowCloses.Inc()
		c.closeWith(chat.CloseTooSlow, "too slow: send queue full")
	}
}

// closeWith asks writePump to close the socket with code; the first
// call wins.
func (c *client) closeWith(code int, text string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText = code, text
		close(c.closing)
	})
}

// writePump owns the socket's writes: queued objects, coalesced into one
// frame separated by '\n'; pings; and the close frame.
func (c *client) writePump() {
	ping := time.NewTicker(c.gw.limits.PingInterval)
	defer func() {
		ping.Stop()
		_ = c.conn.Close()
	}()
	for {
		select {
		case b := <-c.send:
			if err := c.writeBatch(b); err != nil {
				c.closeWith(websocket.CloseAbnormalClosure, "")
				return
			}
		case <-ping.C:
			if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
				c.closeWith(websocket.CloseAbnormalClosure, "")
				return
			}
		case <-c.closing:
			// What is already queued (say, the error frames before a 4008)
			// goes out first, within writeWait, then the close frame.
			for len(c.send) > 0 {
				if err := c.writeBatch(<-c.send); err != nil {
					return
				}
			}
			msg := websocket.FormatCloseMessage(c.closeCode, c.closeText)
			_ = c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(writeWait))
			return
		}
	}
}

// writeBatch writes first and whatever else is queued, up to maxBatch
// objects, as one text frame in one write: gorilla's WriteMessage sends
// the frame header and a payload of any size together, where a message
// writer would flush every WriteBufferSize bytes (a 60 KB online list was
// 15 writes).
func (c *client) writeBatch(first []byte) error {
	// Moving the deadline costs a timer update per write; moving it once
	// per deadlineRefresh keeps a stuck socket's limit within
	// writeWait-deadlineRefresh .. writeWait.
	if now := time.Now(); now.Sub(c.deadlineAt) >= deadlineRefresh {
		_ = c.conn.SetWriteDeadline(now.Add(writeWait))
		c.deadlineAt = now
	}
	n := min(len(c.send), maxBatch-1)
	if n == 0 {
		c.gw.metrics.objectsOut.Inc()
		return c.conn.WriteMessage(websocket.TextMessage, first)
	}
	bp := batchBuffers.Get().(*[]byte)
	b := append((*bp)[:0], first...)
	for range n {
		b = append(b, '\n')
		b = append(b, <-c.send...)
	}
	c.gw.metrics.objectsOut.Add(float64(n + 1))
	err := c.conn.WriteMessage(websocket.TextMessage, b)
	if cap(b) <= maxPooledBatch {
		*bp = b[:0]
		batchBuffers.Put(bp)
	}
	return err
}

// batchBuffers hold coalesced frames while they are written, shared by
// all sockets rather than one per socket.
var batchBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledBatch keeps rare huge batches from staying in the pool.
const maxPooledBatch = 256 << 10

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
			if errors.Is(err, websocket.ErrReadLimit) {
				c.gw.metrics.errors.WithLabelValues("frame_too_big").Inc()
				c.closeWith(websocket.CloseMessageTooBig, "frame too big")
			} else {
				c.closeWith(websocket.CloseNormalClosure, "")
			}
			return
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
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
	c.enqueue(chat.Encode(frame))
}

func errorFrame(id, code, message string) chat.ErrorFrame {
	return chat.ErrorFrame{Type: chat.FrameError, ID: id, Code: code, Message: message}
}
