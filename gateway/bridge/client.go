package bridge

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/natter/natter/gateway/wsconn"
	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/token"
)

// socket is what a client needs of its websocket (wsconn.Conn): the
// hub's and presence's tests queue frames on a recording socket.
type socket interface {
	Serve(onMessage func(data []byte, text bool), onEnd func())
	Send(b []byte) bool
	SendIn(b []byte, l *wsconn.Lineup) bool
	SendWait(b []byte) bool
	WaitHalf(deadline time.Time) bool
	Close(code int, reason string)
	CloseTooSlow()
	CloseCode() int
	Closing() <-chan struct{}
	IsClosing() bool
}

// client is one websocket connection as the chat sees it: a user, their
// token, what they may be sent and when. The socket hands its frames to
// handle, one at a time, and writes what is sent to it.
type client struct {
	id     string
	user   chat.User
	claims *token.Claims
	conn   socket
	gw     *Gateway

	// sendSlots (cap MaxSendsInFlight) holds one token per send waiting
	// for the stream (see handleSend).
	sendSlots chan struct{}

	limiter *rate.Limiter
	strikes int  // rate-limited frames in a row; handle only
	started bool // a first frame was read; handle only

	lastTyping time.Time   // when a typing frame was last relayed; handle only
	listing    atomic.Bool // a requested conversations page is being listed

	// Live delivery starts held: a reconnecting client's first frame is
	// resume, whose replay must come before anything live. mu guards state
	// and held.
	mu        sync.Mutex
	state     delivery
	held      []heldMsg
	heldBytes int
	// floor is the last seq the socket has or is given otherwise: the
	// stream's last seq at its hello (the page reads history up to it),
	// then the last seq a replay sent (a stored message reaches the
	// replay's consumer and the live subscription independently, so its
	// live copy may come after the replay). A live copy at or below it
	// is dropped, before it is held.
	floor uint64

	// frozen: the socket is being closed for resume (4011): live messages
	// were lost to it, and it gets no more, which could come after the gap.
	frozen atomic.Bool

	// The presence batch the socket joined during, and how many bytes of
	// its changes it was given at join; under hub.mu.
	presJoined uint64
	presSeen   int
}

// delivery is where a client's live messages go: held while a resume may
// come first, then straight to the socket.
type delivery int

const (
	stateHolding   delivery = iota // live messages held until the first frame or chat.HoldTimeout
	stateReplaying                 // resume replay running; live messages still held
	stateLive                      // live messages go straight to the queue
)

type heldMsg struct {
	b   []byte
	seq uint64
}

// deliver queues a live message, or holds it while a replay may precede it.
// Holding is bounded by the queue length: a holding client (not yet sent
// its first frame) that would exceed it goes live instead; a replaying one
// is too slow.
func (c *client) deliver(b []byte, seq uint64, l *wsconn.Lineup) {
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
			c.conn.CloseTooSlow()
			return
		}
		c.held = append(c.held, heldMsg{b: b, seq: seq})
		c.heldBytes += len(b)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.send(b, l)
}

// heldFull says whether holding b too would pass the queue's limits, in
// objects or in bytes (c.mu held).
func (c *client) heldFull(b []byte) bool {
	return len(c.held) >= c.gw.limits.QueueLen || c.heldBytes+len(b) > c.gw.limits.QueueBytes
}

// goLive releases the held messages with a seq above after (and the
// floor) and delivers live from then on, if the client is still in state
// from.
func (c *client) goLive(after uint64, from delivery) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != from {
		return false
	}
	c.floor = max(c.floor, after)
	for _, h := range c.held {
		if h.seq > c.floor {
			c.send(h.b, nil)
		}
	}
	c.held, c.heldBytes, c.state = nil, 0, stateLive
	return true
}

// beginResume moves a holding client to replaying; false once live. The
// replay, not the hello, says from where live messages are new: one cut
// at MaxReplay leaves the held messages after its last one to come.
func (c *client) beginResume() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateHolding {
		return false
	}
	c.state, c.floor = stateReplaying, 0
	return true
}

// handle takes one client frame; the socket calls it for each, never
// two at once.
func (c *client) handle(data []byte, text bool) {
	if c.conn.IsClosing() {
		return // its answers would go nowhere: no work for it
	}
	if !c.admit(data) {
		return // refused; a flooding client's socket is closing
	}
	if !text {
		c.reply(errorFrame("", chat.CodeBadFrame, "frames are JSON text"))
		return
	}
	c.gw.handleFrame(c, data)
}

// countClose counts a socket that gorilla closed for a bad frame.
func (c *client) countClose() {
	switch c.conn.CloseCode() {
	case websocket.CloseMessageTooBig:
		c.gw.metrics.errors.WithLabelValues("frame_too_big").Inc()
	case websocket.CloseProtocolError:
		c.gw.metrics.errors.WithLabelValues("protocol_error").Inc()
	}
}

// admit charges one frame to the rate limit. Over it, the frame is refused
// with rate_limited; after FloodStrikes refusals in a row the socket is
// closed, since the client is not listening.
func (c *client) admit(data []byte) bool {
	if c.limiter.Allow() {
		c.strikes = 0
		return true
	}
	c.strikes++
	if c.strikes >= c.gw.limits.FloodStrikes {
		c.gw.metrics.errors.WithLabelValues("flooding").Inc()
		c.conn.Close(chat.CloseFlooding, "flooding: kept sending over the rate limit")
		return false
	}
	c.reply(errorFrame(frameID(data), chat.CodeRateLimited, "over the send rate; slow down"))
	return false
}

// charge takes the rest of HistoryCost (admit took one token) for a
// request that reads the stream and builds a big answer (history, a page
// of conversations); false, with a rate_limited refusal, when the rate
// has not that much left.
func (c *client) charge(id, what string) bool {
	// At most the burst, or no request could ever pass.
	extra := min(c.gw.limits.HistoryCost, c.gw.limits.SendBurst) - 1
	if extra > 0 && !c.limiter.AllowN(time.Now(), extra) {
		c.reply(errorFrame(id, chat.CodeRateLimited, what+" requests cost more of the send rate; slow down"))
		return false
	}
	return true
}

// frameID is a refused frame's id, if it has one, so the client can tell
// which send to retry. It costs a decode of at most MaxFrameBytes, and a
// client gets at most FloodStrikes refusals in a row.
func frameID(data []byte) string {
	var f struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(data, &f)
	return f.ID
}

// reply queues a frame for this client alone.
func (c *client) reply(frame any) {
	if e, ok := frame.(chat.ErrorFrame); ok {
		c.gw.metrics.errors.WithLabelValues(e.Code).Inc()
	}
	c.send(chat.Encode(frame), nil)
}

// send queues an encoded object, or closes a client too slow to take it
// (see wsconn.Conn.Send); l gathers a fan-out's sockets.
func (c *client) send(b []byte, l *wsconn.Lineup) {
	if l != nil {
		c.conn.SendIn(b, l)
	} else {
		c.conn.Send(b)
	}
}

// quotaRefusal is a quota_exceeded refusal, allowed again after wait.
func quotaRefusal(id string, wait time.Duration, message string) chat.ErrorFrame {
	e := errorFrame(id, chat.CodeQuotaExceeded, message)
	e.RetryAfter = seconds(wait)
	return e
}

func errorFrame(id, code, message string) chat.ErrorFrame {
	return chat.ErrorFrame{Type: chat.FrameError, ID: id, Code: code, Message: message}
}
