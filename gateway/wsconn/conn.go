// Package wsconn runs server websockets for many mostly idle clients:
// upgrade, reads with a size limit and a liveness deadline, a bounded
// outgoing queue per socket, and writes done by a few shared workers with
// non-blocking system calls (see Server). It knows nothing of what the
// frames mean.
//
// After the upgrade this package alone writes to the connection. gorilla
// still parses the client's messages, from bytes this package reads for
// it (read.go: an idle socket holds no buffer, and pings and pongs are
// dealt with before gorilla sees them), on no goroutine of its own while
// idle (Serve, serve.go: a readiness loop starts a reader when bytes
// come). While
// reading gorilla writes control frames of its own: the echo of a close,
// a close 1009 for a frame over the read limit, a close 1002 for a
// protocol error. The connection gorilla
// holds is a wrapper (owned) that turns each of those writes into a
// request to the socket's writer instead: a pong is queued, a close
// closes the socket with gorilla's code. So a socket has one writer, and
// why a socket closed is known from the close it sent, not from the text
// of an error.
package wsconn

import (
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// Options are the limits and timings of a Server's sockets.
type Options struct {
	ReadLimit    int64         // largest client frame; bigger ones close the socket with 1009
	QueueLen     int           // objects queued per socket before it is too slow
	QueueBytes   int           // bytes queued per socket before it is too slow
	PingInterval time.Duration // ping period; a socket that sends nothing for two is dropped
	WriteDelay   time.Duration // see Server; 0: every write at once
	Workers      int           // flusher workers (one per CPU suits)

	TooSlowCode   int    // close code for a socket whose queue overflowed
	TooSlowReason string // its reason

	// Hooks for metrics; may be nil.
	OnWrite   func(objects int) // objects written in one write
	OnTooSlow func()            // a socket is closed as too slow
}

// writeWait bounds one blocking write to a socket, and the close.
const writeWait = 10 * time.Second

// MaxObjectsPerFrame bounds the objects coalesced into one text frame.
const MaxObjectsPerFrame = 128

// Server upgrades HTTP requests to sockets and writes them. A few workers
// take the sockets with something to write in the order they got it, and
// write each one's whole queue, framed, in one non-blocking system call;
// a socket whose kernel buffer is full gets a goroutine of its own until
// that write is done. One message to thousands of sockets is thus
// thousands of writes from a couple of goroutines, not thousands of
// goroutines woken; and every socket with something queued is written
// once per round, in turn.
//
// Coalescing follows the workers' own backlog: a socket is written as
// soon as a worker is free, so while the workers keep up every frame goes
// out at once; when they fall behind, a socket waits in line and what it
// is sent meanwhile joins the write it is waiting for. The busier the
// gateway, the more each write carries, with no fixed delay on a quiet
// one.
//
// WriteDelay (off by default) trades latency for CPU on top of that: a
// busy socket (written to more often than every delay, on average)
// written to less than the delay ago waits out the rest.
type Server struct {
	opts     Options
	upgrader websocket.Upgrader
	flusher  *flusher
	pinger   *pinger
	ready    *readiness // nil where there is none: sockets get a reader each
	buffers  sync.Pool  // write buffers (*[]byte), shared by all sockets
	reads    sync.Pool  // read buffers (*[]byte), held while bytes wait

	readsHeld atomic.Int64 // read buffers sockets hold now
}

// NewServer starts the writers; Close stops them.
func NewServer(opts Options) *Server {
	s := &Server{opts: opts}
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: writeWait,
		// gorilla reads from the socket's pooled read buffer (inbound),
		// so its own, held by every socket, only needs to be big enough
		// for a control frame, the least it takes.
		ReadBufferSize:  maxControlPayload,
		WriteBufferSize: 256, // gorilla's own writes: the handshake only
		WriteBufferPool: &sync.Pool{},
		// The caller checks the origin before upgrading.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	s.flusher = newFlusher(max(1, opts.Workers), opts.WriteDelay)
	s.pinger = newPinger(opts.PingInterval)
	s.ready, _ = newReadiness() // without it, Serve falls back to a goroutine per socket
	return s
}

// Close stops the writers, after the sockets have been asked to close: a
// socket still waiting for a write then has its connection closed
// without more.
func (s *Server) Close() {
	s.pinger.close()
	s.flusher.close()
	s.ready.close()
}

// Conn is one server websocket. Serve reads it (or one goroutine, with
// Read); anyone may Send or Close.
type Conn struct {
	srv *Server
	ws  *websocket.Conn // reads; its writes come to this Conn (owned)
	tcp interface {     // the connection under ws: written here
		Read([]byte) (int, error)
		Write([]byte) (int, error)
		SetReadDeadline(time.Time) error
		SetWriteDeadline(time.Time) error
	}
	raw syscall.RawConn // tcp's socket, for non-blocking reads and writes

	in      inbound      // what was read and not yet handed to gorilla; the reader's
	heardAt atomic.Int64 // when the client last sent a pong or a message (Unix ns)

	// queue holds encoded objects (shared, never modified), at most
	// QueueLen of them and QueueBytes in all (qbytes). A slice grown on
	// demand rather than a channel: an idle socket holds no queue memory,
	// and a write takes everything queued at once. qmu guards queue,
	// qbytes, spare, writing, pingDue, pong, drained, done and ended.
	qmu     sync.Mutex
	queue   [][]byte
	qbytes  int
	spare   [][]byte // the last written slice, reused when small
	writing bool     // a write is in line or under way; stays set once writes end
	pingDue bool
	pong    []byte        // a pong to send (its payload), when not nil
	drained chan struct{} // closed when a write takes the queue; made by a waiter (see drainedSignal)
	ended   bool          // the writes have ended and the connection is closed

	pingSlot, pingIndex int32 // where the socket is in the pinger's slots

	// Serve's: the callbacks, whether a reader run holds the reads, and
	// whether onEnd was called (all under qmu); the socket's id in the
	// readiness loop.
	onMessage func(data []byte, text bool)
	onEnd     func()
	reading   bool
	endCalled bool
	readyID   uint64 // under the readiness loop's mu

	closing   chan struct{} // closed by Close
	done      chan struct{} // closed once ended; made by the first Done
	closeOnce sync.Once
	closeCode int // set once, before closing closes
	closeText string

	// Kept with WriteDelay only, by the writer in turn: when the socket
	// was last written to, and the running average of the time between
	// its writes.
	lastWrite time.Time
	writeGap  time.Duration
}

// Upgrade answers the handshake and starts the socket's pings and
// writes. On failure the client has had its answer.
func (s *Server) Upgrade(w http.ResponseWriter, r *http.Request) (*Conn, error) {
	h := &hijacker{ResponseWriter: w}
	ws, err := s.upgrader.Upgrade(h, r, nil)
	if err != nil {
		return nil, err
	}
	// No drained or done channel yet: most sockets never need them.
	c := &Conn{srv: s, ws: ws, closing: make(chan struct{})}
	sc, ok := h.conn.Conn.(syscall.Conn)
	if ok {
		c.raw, err = sc.SyscallConn()
	}
	if !ok || err != nil {
		_ = ws.Close()
		return nil, errors.New("websocket: the connection is not a socket")
	}
	c.tcp = h.conn.Conn
	h.conn.own(c)
	ws.SetReadLimit(s.opts.ReadLimit)
	// Pongs never reach gorilla (inbound notes them): the deadline moves
	// with heardAt.
	c.heard()
	c.refreshDeadline()
	s.pinger.add(c)
	return c, nil
}

// Read returns the next client message and whether it is text. An error
// means the socket is closing: gorilla's close (1009, 1002), the
// client's own (echoed), or 1000 for a connection that failed or went
// silent; CloseCode says which.
func (c *Conn) Read() ([]byte, bool, error) { return c.read(false) }

// read is Read; idle, it returns errIdle rather than wait for a
// message's first bytes (a reader run's read).
func (c *Conn) read(idle bool) ([]byte, bool, error) {
	err := c.wait(idle) // parked shallow, if at all, not in gorilla's reads
	var typ int
	var data []byte
	if err == nil {
		typ, data, err = c.ws.ReadMessage()
	}
	if errors.Is(err, errIdle) {
		return nil, false, err
	}
	if err != nil {
		c.Close(websocket.CloseNormalClosure, "") // unless a close came first
		return nil, false, err
	}
	c.heard()
	return data, typ == websocket.TextMessage, nil
}

// Send queues b (one JSON object, say) without waiting. A socket whose
// queue is full is closed as too slow, so it never holds anyone up; false
// if b was not queued.
func (c *Conn) Send(b []byte) bool { return c.send(b, nil) }

// SendIn is Send for a fan-out: a socket that needs a write joins l,
// whose Flush lines them all up at once.
func (c *Conn) SendIn(b []byte, l *Lineup) bool { return c.send(b, l) }

func (c *Conn) send(b []byte, l *Lineup) bool {
	if c.push(b, c.srv.opts.QueueLen, c.srv.opts.QueueBytes, l) {
		return true
	}
	if !isClosed(c.closing) {
		c.CloseTooSlow()
	}
	return false
}

// SendWait queues b, waiting up to writeWait for room in the first half
// of the queue: a long answer (a replay) may outrun the writes for a
// moment without the client being slow, and what is sent meanwhile
// without waiting keeps room. false if the socket closed or stayed full.
func (c *Conn) SendWait(b []byte) bool {
	t := time.NewTimer(writeWait)
	defer t.Stop()
	limit, maxBytes := max(1, c.srv.opts.QueueLen/2), c.srv.opts.QueueBytes/2
	for !c.push(b, limit, maxBytes, nil) {
		drained := c.drainedSignal()
		if c.push(b, limit, maxBytes, nil) {
			return true // taken between the two
		}
		select {
		case <-drained:
		case <-c.closing:
			return false
		case <-t.C:
			c.CloseTooSlow()
			return false
		}
	}
	return true
}

// drainedSignal is closed by the next write that takes the queue. Every
// waiter (a replay's SendWait, a catch-up's WaitHalf) gets the same one:
// none can take another's wake-up.
func (c *Conn) drainedSignal() chan struct{} {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.drained == nil {
		c.drained = make(chan struct{})
	}
	return c.drained
}

// WaitHalf waits until the socket's queue is below half full, in objects
// and in bytes (where SendWait queues), or deadline; false if it is still
// fuller then, or the socket closed. It queues nothing: what others send
// meanwhile counts too.
func (c *Conn) WaitHalf(deadline time.Time) bool {
	var t *time.Timer
	for {
		switch {
		case isClosed(c.closing):
			return false
		case c.belowHalf():
			return true
		case t == nil:
			wait := time.Until(deadline)
			if wait <= 0 {
				return false
			}
			t = time.NewTimer(wait)
			defer t.Stop()
		}
		drained := c.drainedSignal()
		if c.belowHalf() {
			return true // taken between the two
		}
		select {
		case <-drained:
		case <-c.closing:
			return false
		case <-t.C:
			return false
		}
	}
}

// belowHalf says whether SendWait could queue a small object now.
func (c *Conn) belowHalf() bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return len(c.queue) < max(1, c.srv.opts.QueueLen/2) && c.qbytes < c.srv.opts.QueueBytes/2
}

// CloseTooSlow closes a socket that does not read what it is sent.
func (c *Conn) CloseTooSlow() {
	if h := c.srv.opts.OnTooSlow; h != nil {
		h()
	}
	c.Close(c.srv.opts.TooSlowCode, c.srv.opts.TooSlowReason)
}

// Close closes the socket with code, after what is queued; the first call
// wins. CloseAbnormalClosure closes without a close frame.
func (c *Conn) Close(code int, reason string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText = code, reason
		close(c.closing)
	})
	c.kick()
}

// Closing is closed once Close was called.
func (c *Conn) Closing() <-chan struct{} { return c.closing }

// IsClosing says whether Close was called.
func (c *Conn) IsClosing() bool { return isClosed(c.closing) }

// Done is closed once the socket's writes have ended and its connection
// is closed.
func (c *Conn) Done() <-chan struct{} {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.ended {
			close(c.done)
		}
	}
	return c.done
}

// CloseCode is the code the socket closes with, once Closing is closed.
func (c *Conn) CloseCode() int {
	<-c.closing
	return c.closeCode
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Lineup gathers the sockets a fan-out made ready to write, to put them
// in the writers' line under one lock. Not safe for concurrent use.
type Lineup struct{ conns []*Conn }

// Flush lines up the sockets gathered and empties l for reuse.
func (l *Lineup) Flush() {
	if len(l.conns) > 0 {
		l.conns[0].srv.flusher.add(l.conns...)
	}
	clear(l.conns)
	l.conns = l.conns[:0]
}
