package main

import (
	"errors"
	"sync"
	"sync/atomic"
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
// writes go through a bounded send queue to a writer goroutine (write)
// that runs only while there is something to write, so an idle socket
// costs one goroutine, not two.
type client struct {
	id     string
	user   chat.User
	claims *token.Claims
	conn   *websocket.Conn
	gw     *gateway

	// queue holds encoded frame objects (shared, never modified) for the
	// writer, at most gw.limits.QueueLen; a full queue means the client
	// is too slow. A slice grown on demand rather than a channel of
	// QueueLen slots: an idle socket holds no queue memory, and the
	// writer takes everything queued at once. qmu guards queue, spare,
	// writing, lingering and pingDue.
	qmu       sync.Mutex
	queue     [][]byte
	spare     [][]byte // the writer's last slice, reused when small
	writing   bool     // a writer runs; stays set once the socket's writes end
	lingering bool     // the writer waits on wake for more to do
	pingDue   bool
	wake      chan struct{} // (cap 1) wakes a lingering writer
	room      chan struct{} // (cap 1) the writer took the queue
	pinger    *time.Timer   // sets pingDue every PingInterval

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
	mu    sync.Mutex
	state int
	held  []heldMsg
	// floor is the last seq a replay sent: a stored message reaches the
	// replay's consumer and the live subscription independently, so its
	// live copy may come after the replay, and is dropped.
	floor uint64

	// frozen: NATS went away while this socket was open; it gets no more
	// live messages and is closed for resume (4011).
	frozen atomic.Bool

	// When the writer last wrote queued objects, and the time before.
	lastWrite, prevWrite time.Time

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
func (c *client) deliver(b []byte, seq uint64) {
	if c.frozen.Load() {
		return // it resumes from before the gap instead
	}
	c.mu.Lock()
	if c.state == stateHolding && len(c.held) >= c.gw.limits.QueueLen {
		c.mu.Unlock()
		c.goLive(0, stateHolding)
		c.mu.Lock()
	}
	if seq <= c.floor {
		c.mu.Unlock()
		return
	}
	if c.state != stateLive {
		if len(c.held) >= c.gw.limits.QueueLen {
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

// push queues b unless the queue holds limit objects.
func (c *client) push(b []byte, limit int) bool {
	c.qmu.Lock()
	if len(c.queue) >= limit {
		c.qmu.Unlock()
		return false
	}
	c.queue = append(c.queue, b)
	start := c.needWriter()
	c.qmu.Unlock()
	if start {
		go c.write()
	}
	return true
}

// needWriter says whether the caller, holding qmu, must start a writer:
// none runs, and the socket's writes have not ended. A lingering writer
// is woken instead.
func (c *client) needWriter() bool {
	if !c.writing {
		c.writing = true
		return true
	}
	if c.lingering {
		c.lingering = false
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	return false
}

// writerLinger is how long a writer with nothing to do waits for more
// before it ends, on a busy socket (its last two writes less than this
// apart): a busy socket keeps its writer (starting one per write costs
// more than the write); any other socket's writer ends when done, so a
// presence batch to every socket does not leave a writer on each.
const writerLinger = time.Second

// kick makes sure a writer runs (for a ping or the close).
func (c *client) kick() {
	c.qmu.Lock()
	start := c.needWriter()
	c.qmu.Unlock()
	if start {
		go c.write()
	}
}

// startWrites starts the pings and the writes of a joined socket: what
// was queued while it joined (hello, the online list) goes out first.
func (c *client) startWrites() {
	c.pinger = time.AfterFunc(c.gw.limits.PingInterval, c.ping)
	c.qmu.Lock()
	c.writing = false
	c.qmu.Unlock()
	c.kick()
}

// ping is the pinger's tick: the writer sends a ping, then re-arms it.
func (c *client) ping() {
	c.qmu.Lock()
	c.pingDue = true
	c.qmu.Unlock()
	c.kick()
}

// giveBack returns a written slice for reuse, unless it grew big (an idle
// socket keeps at most a small one).
func (c *client) giveBack(q [][]byte) {
	if cap(q) > maxSpare {
		return
	}
	clear(q) // the objects themselves can go
	c.qmu.Lock()
	c.spare = q[:0]
	c.qmu.Unlock()
}

// maxSpare is the largest queue slice a socket keeps between writes.
const maxSpare = 16

// enqueueWait queues b, waiting up to writeWait for room: a replay may
// outrun the writer for a moment without the client being slow.
func (c *client) enqueueWait(b []byte) bool {
	t := time.NewTimer(writeWait)
	defer t.Stop()
	// A replay fills at most half the queue: live messages, presence
	// changes and acks queued meanwhile (without waiting) keep room, so a
	// long replay does not get a healthy client closed as too slow.
	for !c.push(b, max(1, c.gw.limits.QueueLen/2)) {
		select {
		case <-c.room:
		case <-c.closing:
			return false
		case <-t.C:
			c.gw.metrics.slowCloses.Inc()
			c.closeWith(chat.CloseTooSlow, "too slow: send queue full")
			return false
		}
	}
	return true
}

// enqueue queues an encoded object without blocking; a client whose queue
// is full is closed as too slow, so it never holds anyone else up.
func (c *client) enqueue(b []byte) {
	if c.push(b, c.gw.limits.QueueLen) {
		return
	}
	select {
	case <-c.closing: // closing anyway: not a slow client
	default:
		c.gw.metrics.slowCloses.Inc()
		c.closeWith(chat.CloseTooSlow, "too slow: send queue full")
	}
}

// closeWith asks the writer to close the socket with code; the first
// call wins.
func (c *client) closeWith(code int, text string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText = code, text
		close(c.closing)
	})
	c.kick()
}

// write is the socket's writer: queued objects, coalesced into frames
// separated by '\n'; a due ping; at the end the close frame. At most one
// runs per socket (writing), and only while there is something to do or
// for writerLinger after.
func (c *client) write() {
	linger := time.NewTimer(writerLinger)
	defer linger.Stop()
	for {
		// A socket written to less than WriteDelay ago waits out the
		// rest, so what arrives meanwhile joins this write: a busy socket
		// gets at most one write per WriteDelay, a quiet one is written
		// to at once.
		if d := c.gw.limits.WriteDelay; d > 0 {
			if wait := d - time.Since(c.lastWrite); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-c.closing:
					t.Stop()
				}
			}
		}
		c.qmu.Lock()
		q, ping := c.queue, c.pingDue
		closing := isClosed(c.closing)
		if len(q) == 0 && !ping && !closing {
			if c.idle(linger) {
				return
			}
			continue
		}
		c.queue, c.spare, c.pingDue = c.spare, nil, false
		c.qmu.Unlock()
		select {
		case c.room <- struct{}{}:
		default:
		}
		err := c.writeObjects(q)
		if err == nil && ping && !closing {
			if err = c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err == nil {
				c.pinger.Reset(c.gw.limits.PingInterval)
			}
		}
		if err != nil || closing {
			c.finish(err)
			return
		}
	}
}

// idle is called with qmu held and nothing to write: on a busy socket it
// waits up to writerLinger for more (needWriter wakes it); true when the
// writer should end. The end is decided under qmu: a push, ping or
// closeWith after it starts a new writer.
func (c *client) idle(linger *time.Timer) bool {
	// A ping alone does not make a socket busy.
	if c.lastWrite.Sub(c.prevWrite) > writerLinger || time.Since(c.lastWrite) > writerLinger {
		c.writing = false
		c.qmu.Unlock()
		return true
	}
	c.lingering = true
	c.qmu.Unlock()
	linger.Reset(writerLinger)
	select {
	case <-c.wake:
		return false
	case <-c.closing:
		c.qmu.Lock()
		c.lingering = false
		c.qmu.Unlock()
		return false
	case <-linger.C:
	}
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if !c.lingering { // woken meanwhile: take the wake it left
		select {
		case <-c.wake:
		default:
		}
		return false
	}
	c.lingering = false
	if len(c.queue) > 0 || c.pingDue || isClosed(c.closing) {
		return false
	}
	c.writing = false
	return true
}

// finish ends the socket's writes: after what was queued (say, the error
// frames before a 4008) the close frame, unless a write failed.
func (c *client) finish(err error) {
	if err != nil {
		c.closeWith(websocket.CloseAbnormalClosure, "")
	} else {
		msg := websocket.FormatCloseMessage(c.closeCode, c.closeText)
		_ = c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(writeWait))
	}
	c.pinger.Stop()
	_ = c.conn.Close()
	close(c.writerDone)
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// writeObjects writes q, maxBatch objects per frame, and keeps the slice
// for reuse.
func (c *client) writeObjects(q [][]byte) error {
	defer c.giveBack(q)
	for rest := q; len(rest) > 0; {
		n := min(len(rest), maxBatch)
		if err := c.writeFrame(rest[:n]); err != nil {
			return err
		}
		rest = rest[n:]
	}
	return nil
}

// writeFrame writes objects as one text frame, '\n'-separated, in one
// write: gorilla's WriteMessage sends the frame header and a payload of
// any size together, where a message writer would flush every
// WriteBufferSize bytes (a 60 KB online list was 15 writes).
func (c *client) writeFrame(objects [][]byte) error {
	c.prevWrite, c.lastWrite = c.lastWrite, time.Now()
	// gorilla keeps the deadline and applies it to the write itself.
	_ = c.conn.SetWriteDeadline(c.lastWrite.Add(writeWait))
	c.gw.metrics.objectsOut.Add(float64(len(objects)))
	if len(objects) == 1 {
		return c.conn.WriteMessage(websocket.TextMessage, objects[0])
	}
	bp, _ := c.gw.batches.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	b := (*bp)[:0]
	for i, o := range objects {
		if i > 0 {
			b = append(b, '\n')
		}
		b = append(b, o...)
	}
	err := c.conn.WriteMessage(websocket.TextMessage, b)
	if cap(b) <= maxPooledBatch {
		*bp = b[:0]
		c.gw.batches.Put(bp)
	}
	return err
}

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
