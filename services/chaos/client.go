package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/natter/natter/services/chat"
)

// The page's reconnect timing (gateway/web/conn.js), in milliseconds.
const (
	maxBackoffMs  = 5000
	stormSpreadMs = 3000
	baseBackoffMs = 500
	// retryLaterMs is how long a send refused with unavailable or
	// rate_limited waits before it is sent again.
	retryLaterMs = 2000
)

// dialTimeout bounds one websocket handshake: long, as a browser's,
// so a gateway that takes seconds to answer 503 is heard.
const dialTimeout = 20 * time.Second

// writeTimeout bounds one frame's write.
const writeTimeout = 5 * time.Second

// Client is one browser tab: a websocket to a gateway that reconnects with
// the page's backoff, resumes from the last seq it saw as its first frame,
// and sends again, with the same id, every send not yet acknowledged. Its
// gateways stand for a load balancer: it dials its own first and, when
// that refuses the connection, the next.
type Client struct {
	Index  int
	User   User
	ledger *Ledger
	gws    []string // its own first
	dialer *websocket.Dialer

	mu       sync.Mutex
	rng      *rand.Rand
	conn     *websocket.Conn
	live     bool
	lastSeq  uint64
	outbox   map[string][]byte // unacked send frames by id
	order    []string          // ids in send order (acked ones skipped)
	attempt  int
	downAt   time.Time // when the last socket ended, zero once live again
	sent     int
	hold     chan struct{} // non-nil: the reader stops until it is closed
	online   map[string]bool
	closes   []int
	statuses []int // HTTP statuses of refused handshakes
	retryAft []string
	history  []string // socket ends and starts, for reports

	stop chan struct{}
	done chan struct{}
}

// User is a registered, logged-in account.
type User struct {
	ID, Account, Token string
}

// NewClient makes client i of user u, preferring gateway i mod len(gws).
func NewClient(i int, u User, gws []string, seed uint64, l *Ledger, d *websocket.Dialer) *Client {
	own := i % len(gws)
	order := append(append([]string{}, gws[own:]...), gws[:own]...)
	return &Client{
		Index: i, User: u, ledger: l, gws: order, dialer: d,
		rng:    rand.New(rand.NewPCG(seed, uint64(i))),
		outbox: map[string][]byte{}, online: map[string]bool{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// Start connects and keeps the client connected until Stop.
func (c *Client) Start() { go c.run() }

// Stop closes the socket and ends the client, waiting for it.
func (c *Client) Stop() {
	close(c.stop)
	c.mu.Lock()
	if c.conn != nil {
		_ = c.conn.Close()
	}
	if c.hold != nil {
		close(c.hold)
		c.hold = nil
	}
	c.mu.Unlock()
	<-c.done
}

func (c *Client) stopped() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

func (c *Client) run() {
	defer close(c.done)
	for !c.stopped() {
		// A tab that stopped reading (frozen, in the background) runs
		// no reconnect timer either: it reconnects once it reads again.
		c.waitHold()
		if c.stopped() {
			return
		}
		code := 1006 // what a browser reports for a connection that failed
		if conn, err := c.dial(); err == nil {
			code = c.session(conn)
		}
		if code == chat.CloseTokenRevoked || code == chat.CloseTokenExpired || code == 1008 {
			return // a new login is needed: the page stops too
		}
		select {
		case <-c.stop:
			return
		case <-time.After(c.backoff(code)):
		}
	}
}

// backoff is conn.js's delay before the next connect after close code.
func (c *Client) backoff(code int) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	storm := code == 1001 || code == chat.CloseResume
	var ms float64
	if storm && c.attempt == 0 {
		ms = c.rng.Float64() * stormSpreadMs
	} else {
		ms = min(maxBackoffMs, baseBackoffMs*float64(uint64(1)<<min(c.attempt, 16))) * (0.5 + c.rng.Float64()/2)
	}
	c.attempt++
	return time.Duration(ms * float64(time.Millisecond))
}

// dial opens a socket to the first gateway that accepts one.
func (c *Client) dial() (*websocket.Conn, error) {
	var errs []error
	for _, gw := range c.gws {
		h := http.Header{"Cookie": {chat.TokenCookie + "=" + c.User.Token}, "Origin": {gw}}
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		conn, resp, err := c.dialer.DialContext(ctx, "ws"+strings.TrimPrefix(gw, "http")+"/ws", h)
		cancel()
		if err == nil {
			return conn, nil
		}
		if resp != nil {
			// The gateway answered: a load balancer sends the browser
			// its answer, it does not try another gateway.
			c.mu.Lock()
			c.statuses = append(c.statuses, resp.StatusCode)
			c.retryAft = append(c.retryAft, resp.Header.Get("Retry-After"))
			c.mu.Unlock()
			return nil, fmt.Errorf("dial %s: HTTP %d", gw, resp.StatusCode)
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// session runs one socket until it ends and returns its close code.
func (c *Client) session(conn *websocket.Conn) int {
	c.mu.Lock()
	c.conn = conn
	resuming := c.lastSeq > 0
	after := c.lastSeq
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		now := time.Now()
		c.conn, c.live = nil, false
		// Recovery counts from the first drop: a socket that ends
		// again before it is live (a failed resume) does not restart it.
		if c.downAt.IsZero() {
			c.downAt = now
		}
		c.history = append(c.history, "down "+now.Format(clock))
		c.mu.Unlock()
		_ = conn.Close()
	}()
	if c.stopped() {
		return 1000
	}
	if resuming {
		if err := c.write(conn, fmt.Appendf(nil, `{"type":"resume","after":%d}`, after)); err != nil {
			return 1006
		}
	}
	for {
		c.waitHold()
		_, data, err := conn.ReadMessage()
		if err != nil {
			code := 1006
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				code = ce.Code
			}
			c.mu.Lock()
			c.closes = append(c.closes, code)
			c.mu.Unlock()
			return code
		}
		now := time.Now()
		for line := range bytes.SplitSeq(data, []byte{'\n'}) {
			if len(line) > 0 {
				c.handle(conn, line, resuming, now)
			}
		}
	}
}

// waitHold blocks while the client plays a reader that stopped reading.
func (c *Client) waitHold() {
	c.mu.Lock()
	h := c.hold
	c.mu.Unlock()
	if h != nil {
		<-h
	}
}

// StopReading makes the client stop reading its socket (a frozen tab),
// until ReadAgain.
func (c *Client) StopReading() {
	c.mu.Lock()
	if c.hold == nil {
		c.hold = make(chan struct{})
	}
	c.mu.Unlock()
}

// ReadAgain lets a client that stopped reading read again.
func (c *Client) ReadAgain() {
	c.mu.Lock()
	if c.hold != nil {
		close(c.hold)
		c.hold = nil
	}
	c.mu.Unlock()
}

// serverFrame is what the client reads of any server object.
type serverFrame struct {
	Type     string      `json:"type"`
	ID       string      `json:"id"`
	Seq      uint64      `json:"seq"`
	Code     string      `json:"code"`
	Complete bool        `json:"complete"`
	Users    []chat.User `json:"users"`
	User     chat.User   `json:"user"`
	Online   bool        `json:"online"`
	From     chat.User   `json:"from"`
	To       chat.To     `json:"to"`
	Text     string      `json:"text"`
}

func (c *Client) handle(conn *websocket.Conn, line []byte, resuming bool, now time.Time) {
	if m, ok := fastMessage(line); ok {
		c.onMessage(m, now)
		return
	}
	var f serverFrame
	if err := json.Unmarshal(line, &f); err != nil {
		c.ledger.note(fmt.Sprintf("client %d: undecodable frame %.80q", c.Index, line))
		return
	}
	switch f.Type {
	case chat.FrameHello:
		c.onHello(conn, f.Seq, resuming, now)
	case chat.FrameResumed:
		if !f.Complete {
			c.ledger.note(fmt.Sprintf("client %d: resume incomplete at seq %d", c.Index, f.Seq))
		}
		c.goLive(conn, now)
	case chat.FrameMessage:
		c.onMessage(Delivery{Seq: f.Seq, ID: f.ID, From: f.From.ID, To: f.To, Text: f.Text}, now)
	case chat.FrameAck:
		c.mu.Lock()
		delete(c.outbox, f.ID)
		c.mu.Unlock()
		c.ledger.acked(c.User.ID, f.ID, f.Seq, now)
	case chat.FrameError:
		c.onError(conn, f)
	case chat.FramePresence:
		c.onPresence(f)
	}
}

func (c *Client) onHello(conn *websocket.Conn, seq uint64, resuming bool, now time.Time) {
	c.mu.Lock()
	c.attempt = 0
	c.mu.Unlock()
	c.ledger.hello(c, seq)
	if resuming {
		return // live after resumed
	}
	c.mu.Lock()
	c.lastSeq = max(c.lastSeq, seq)
	c.mu.Unlock()
	c.goLive(conn, now)
}

func (c *Client) onMessage(m Delivery, now time.Time) {
	if c.ledger.delivered(c, m, now) {
		c.ledger.note(fmt.Sprintf("client %d got seq %d again at %s (%s/%s): %s", c.Index, m.Seq, now.Format(clock), m.From, m.ID, c.state()))
	}
	c.mu.Lock()
	c.lastSeq = max(c.lastSeq, m.Seq)
	c.mu.Unlock()
}

func (c *Client) onError(conn *websocket.Conn, f serverFrame) {
	c.mu.Lock()
	_, mine := c.outbox[f.ID]
	c.mu.Unlock()
	if f.ID == "" || !mine {
		// (unavailable without an id: a resume that failed; the
		// gateway closes the socket and the client resumes again.)
		if f.Code != chat.CodeUnavailable {
			c.ledger.note(fmt.Sprintf("client %d: error %s (id %q)", c.Index, f.Code, f.ID))
		}
		return
	}
	if f.Code == chat.CodeUnavailable || f.Code == chat.CodeRateLimited {
		c.ledger.refusedOnce(f.Code)
		time.AfterFunc(retryLaterMs*time.Millisecond, func() { c.retry(conn, f.ID) })
		return
	}
	c.mu.Lock()
	delete(c.outbox, f.ID)
	c.mu.Unlock()
	c.ledger.refused(c.User.ID, f.ID, f.Code)
}

// retry sends id again if it is still unacked and conn is still live.
func (c *Client) retry(conn *websocket.Conn, id string) {
	c.mu.Lock()
	frame, ok := c.outbox[id]
	ok = ok && c.live && c.conn == conn
	c.mu.Unlock()
	if ok {
		_ = c.write(conn, frame)
	}
}

func (c *Client) onPresence(f serverFrame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.Users != nil {
		c.online = map[string]bool{}
		for _, u := range f.Users {
			c.online[u.ID] = true
		}
		return
	}
	if f.Online {
		c.online[f.User.ID] = true
	} else {
		delete(c.online, f.User.ID)
	}
}

// goLive marks the socket live (hello without resume, or resumed), records
// how long the client was without one, and sends every unacked send again.
func (c *Client) goLive(conn *websocket.Conn, now time.Time) {
	c.mu.Lock()
	c.live = true
	c.history = append(c.history, fmt.Sprintf("live %s after %d", now.Format(clock), c.lastSeq))
	if !c.downAt.IsZero() {
		c.ledger.recovered(now.Sub(c.downAt))
		if d := now.Sub(c.downAt); d > slowRecoveryAt {
			// The slowest say where the time went.
			c.ledger.noteSlow(d, fmt.Sprintf("client %d: live again %.1f s after its drop: closes %v, refused handshakes %v, history %v",
				c.Index, d.Seconds(), c.closes, c.statuses, c.history))
		}
		c.downAt = time.Time{}
	}
	var frames [][]byte
	ids := c.order[:0]
	for _, id := range c.order {
		if f, ok := c.outbox[id]; ok {
			frames = append(frames, f)
			ids = append(ids, id)
		}
	}
	c.order = ids
	c.mu.Unlock()
	for _, f := range frames {
		if c.write(conn, f) != nil {
			return
		}
	}
}

func (c *Client) write(conn *websocket.Conn, frame []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != conn {
		return errors.New("socket gone")
	}
	_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	return conn.WriteMessage(websocket.TextMessage, frame)
}

// Send queues a message to to; it goes now if the socket is live, else
// when it is again. The text carries its send time, for latencies.
func (c *Client) Send(to chat.To, filler string) string {
	now := time.Now()
	c.mu.Lock()
	c.sent++
	id := fmt.Sprintf("c%d-%d", c.Index, c.sent)
	text := "t=" + strconv.FormatInt(now.UnixNano(), 10) + " " + filler
	frame := chat.Encode(chat.ClientFrame{Type: chat.FrameSend, ID: id, To: &to, Text: text})
	c.outbox[id] = frame
	c.order = append(c.order, id)
	conn, live := c.conn, c.live
	c.mu.Unlock()
	c.ledger.sending(c.User.ID, id, to, now)
	if live {
		_ = c.write(conn, frame)
	}
	return id
}

// Drop closes the client's socket as a failing network would: the
// client reconnects with its backoff and resumes.
func (c *Client) Drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		_ = c.conn.Close()
	}
}

// Unacked is how many of the client's sends await their ack.
func (c *Client) Unacked() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.outbox)
}

// Live reports whether the client has a live socket.
func (c *Client) Live() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live
}

// Online is the set of user ids the client's socket shows online.
func (c *Client) Online() map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]bool, len(c.online))
	for id := range c.online {
		out[id] = true
	}
	return out
}

// Closes are the close codes of the client's sockets so far.
func (c *Client) Closes() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.closes...)
}

// Refusals are the HTTP statuses (with Retry-After) of refused handshakes.
func (c *Client) Refusals() (statuses []int, retryAfter []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.statuses...), append([]string(nil), c.retryAft...)
}

// Delivery is a message frame as a client received it.
type Delivery struct {
	Seq  uint64
	ID   string
	From string
	To   chat.To
	Text string
}

// fastMessage reads a message frame without a JSON decoder: hundreds of
// clients decode every delivery in the test process, which shares two
// cores with the servers. It knows the gateway's layout (the stored
// object, then "type" and "seq"); anything else takes the JSON path.
func fastMessage(line []byte) (Delivery, bool) {
	i := bytes.LastIndex(line, []byte(`,"type":"message","seq":`))
	if i < 0 || !bytes.HasPrefix(line, []byte(`{"id":"`)) {
		return Delivery{}, false
	}
	seq, err := strconv.ParseUint(string(bytes.TrimSuffix(line[i+len(`,"type":"message","seq":`):], []byte("}"))), 10, 64)
	if err != nil {
		return Delivery{}, false
	}
	d := Delivery{Seq: seq}
	var ok1, ok2, ok3 bool
	d.ID, ok1 = stringAfter(line, `{"id":"`)
	d.From, ok2 = stringAfter(line, `,"from":{"id":"`)
	d.Text, ok3 = stringAfter(line, `,"text":"`)
	room, isRoom := stringAfter(line, `,"to":{"room":"`)
	user, isUser := stringAfter(line, `,"to":{"user":"`)
	if !ok1 || !ok2 || !ok3 || isRoom == isUser {
		return Delivery{}, false
	}
	d.To = chat.To{Room: room, User: user}
	return d, true
}

// stringAfter is the first string value after key, when it has no escapes.
func stringAfter(line []byte, key string) (string, bool) {
	i := bytes.Index(line, []byte(key))
	if i < 0 {
		return "", false
	}
	rest := line[i+len(key):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 || bytes.IndexByte(rest[:end], '\\') >= 0 {
		return "", false
	}
	return string(rest[:end]), true
}

// state describes the client for a report: live, last seq, close codes.
func (c *Client) state() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("live=%v last seq %d, closes %v, refused handshakes %v, history %v", c.live, c.lastSeq, c.closes, c.statuses, c.history)
}
