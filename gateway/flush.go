package main

import (
	"encoding/binary"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/natter/natter/services/chat"
)

// flusher writes what the sockets have queued. A few workers (one per
// CPU) take the sockets with something to write in the order they got
// it, and write each one's whole queue, framed, in one non-blocking
// system call. A socket whose kernel buffer is full gets a goroutine of
// its own, which waits for it, until that write is done.
//
// One message to a room of thousands is thus thousands of writes from a
// couple of goroutines rather than thousands of goroutines woken, each
// with its own timers; and every socket with something queued is written
// once per round, in turn, so none waits behind another's second write.
// Under load a socket's objects queue up while it waits for its turn,
// and go out together in one write.
type flusher struct {
	mu       sync.Mutex
	stopped  bool
	line     []*client // sockets to write, oldest first
	head     int       // line[:head] have been taken
	sleeping int       // workers waiting on wake
	wake     chan struct{}
	stop     chan struct{}
	done     sync.WaitGroup

	// With WRITE_DELAY, a socket written to less than delay ago waits
	// out the rest in later (release puts it back in line), so what
	// arrives meanwhile joins its next write.
	delay time.Duration
	later []heldSocket
	held  chan struct{} // (cap 1) later is no longer empty
}

type heldSocket struct {
	c   *client
	due time.Time
}

// flushChunk is how many sockets a worker takes from the line at once.
const flushChunk = 16

func newFlusher(workers int, delay time.Duration) *flusher {
	f := &flusher{wake: make(chan struct{}, workers), stop: make(chan struct{}), delay: delay, held: make(chan struct{}, 1)}
	f.done.Add(workers)
	for range workers {
		go f.work()
	}
	if delay > 0 {
		f.done.Add(1)
		go f.release()
	}
	return f
}

// close stops the workers, after the sockets have been asked to close
// (stopSockets). A socket still waiting for a write then, or coming back
// from one, has its connection closed without more.
func (f *flusher) close() {
	f.mu.Lock()
	f.stopped = true
	left := slices.Clone(f.line[f.head:])
	for _, h := range f.later {
		left = append(left, h.c)
	}
	f.line, f.head, f.later = nil, 0, nil
	f.mu.Unlock()
	close(f.stop)
	f.done.Wait()
	for _, c := range left {
		c.end()
	}
}

// add puts cs at the end of the line, under one lock (a room's message
// adds hundreds at once); the caller has set their writing, so a socket
// is in line at most once.
func (f *flusher) add(cs ...*client) {
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		for _, c := range cs {
			c.end()
		}
		return
	}
	f.line = append(f.line, cs...)
	wake := f.wakeLocked(len(cs))
	f.mu.Unlock()
	f.sendWakes(wake)
}

// wakeLocked takes up to n sleeping workers to wake (f.mu held);
// sendWakes wakes them, after the lock.
func (f *flusher) wakeLocked(n int) int {
	k := min(n, f.sleeping)
	f.sleeping -= k
	return k
}

func (f *flusher) sendWakes(k int) {
	for range k {
		f.wake <- struct{}{} // never blocks: one slot per worker
	}
}

// hold sets c aside until due. later stays sorted by due time: sockets
// come in nearly in that order, so the insertion moves little.
func (f *flusher) hold(c *client, due time.Time) {
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		c.end()
		return
	}
	f.later = append(f.later, heldSocket{c: c, due: due})
	i := len(f.later) - 1
	for ; i > 0 && f.later[i-1].due.After(due); i-- {
		f.later[i] = f.later[i-1]
	}
	f.later[i] = heldSocket{c: c, due: due}
	first := len(f.later) == 1
	f.mu.Unlock()
	if first {
		select {
		case f.held <- struct{}{}:
		default:
		}
	}
}

// releaseTick is how often release looks for due sockets while some are
// held: a socket waits at most this much more than the delay.
const releaseTick = time.Millisecond

// release puts the held sockets back in line when due.
func (f *flusher) release() {
	defer f.done.Done()
	tick := time.NewTicker(releaseTick)
	defer tick.Stop()
	for {
		select {
		case <-f.held:
		case <-f.stop:
			return
		}
		for more := true; more; {
			select {
			case <-tick.C:
			case <-f.stop:
				return
			}
			now := time.Now()
			f.mu.Lock()
			n := 0 // later is sorted: the due ones come first
			for n < len(f.later) && !f.later[n].due.After(now) {
				f.line = append(f.line, f.later[n].c)
				n++
			}
			m := copy(f.later, f.later[n:])
			clear(f.later[m:])
			f.later = f.later[:m]
			more = m > 0
			wake := f.wakeLocked(n)
			f.mu.Unlock()
			f.sendWakes(wake)
		}
	}
}

func (f *flusher) work() {
	defer f.done.Done()
	batch := make([]*client, 0, flushChunk)
	for {
		f.mu.Lock()
		for f.head == len(f.line) {
			f.sleeping++
			f.mu.Unlock()
			select {
			case <-f.wake:
			case <-f.stop:
				return
			}
			f.mu.Lock()
		}
		n := min(flushChunk, len(f.line)-f.head)
		batch = append(batch[:0], f.line[f.head:f.head+n]...)
		clear(f.line[f.head : f.head+n])
		f.head += n
		switch {
		case f.head == len(f.line):
			f.line, f.head = f.line[:0], 0
		case f.head >= 1024 && 2*f.head >= len(f.line):
			// Under steady load the line never empties: reuse its front.
			m := copy(f.line, f.line[f.head:])
			clear(f.line[m:])
			f.line, f.head = f.line[:m], 0
		}
		f.mu.Unlock()
		for _, c := range batch {
			c.flush()
		}
	}
}

// push queues b unless the queue holds limit objects or b would take it
// past maxBytes. A socket that now needs a write is put in the flusher's
// line, or appended to sched when the caller gathers a room's sockets to
// line them up at once.
func (c *client) push(b []byte, limit, maxBytes int, sched *[]*client) bool {
	c.qmu.Lock()
	if len(c.queue) >= limit || c.qbytes+len(b) > maxBytes {
		c.qmu.Unlock()
		return false
	}
	c.queue = append(c.queue, b)
	c.qbytes += len(b)
	start := c.schedule()
	c.qmu.Unlock()
	switch {
	case !start:
	case sched != nil:
		*sched = append(*sched, c)
	default:
		c.gw.flusher.add(c)
	}
	return true
}

// schedule says whether the caller, holding qmu, must put c in the
// flusher's line: no write of c's is in line or under way, and its
// writes have not ended.
func (c *client) schedule() bool {
	if c.writing {
		return false
	}
	c.writing = true
	return true
}

// kick makes sure a write comes (for a ping, a pong or the close).
func (c *client) kick() {
	c.qmu.Lock()
	start := c.schedule()
	c.qmu.Unlock()
	if start {
		c.gw.flusher.add(c)
	}
}

// startWrites starts the pings and the writes of a joined socket: what
// was queued while it joined (hello, the online list) goes out first.
// Control frames from the client are answered through the same writes:
// a socket has one writer at a time.
func (c *client) startWrites() {
	c.conn.SetPingHandler(func(data string) error {
		c.qmu.Lock()
		c.pong = append([]byte{}, data...) // not nil, even empty
		c.qmu.Unlock()
		c.kick()
		return nil
	})
	c.conn.SetCloseHandler(func(code int, _ string) error {
		c.closeWith(code, "") // echoed, as the protocol asks
		return nil
	})
	c.pinger = time.AfterFunc(c.gw.limits.PingInterval, c.ping)
	c.qmu.Lock()
	c.writing = false
	c.qmu.Unlock()
	c.kick()
}

// ping is the pinger's tick: the next write sends a ping, then re-arms it.
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
// outrun the writes for a moment without the client being slow.
func (c *client) enqueueWait(b []byte) bool {
	t := time.NewTimer(writeWait)
	defer t.Stop()
	// A replay fills at most half the queue: live messages, presence
	// changes and acks queued meanwhile (without waiting) keep room, so a
	// long replay does not get a healthy client closed as too slow.
	for !c.push(b, max(1, c.gw.limits.QueueLen/2), c.gw.limits.QueueBytes/2, nil) {
		select {
		case <-c.room:
		case <-c.closing:
			return false
		case <-t.C:
			c.tooSlow()
			return false
		}
	}
	return true
}

// enqueue queues an encoded object without blocking; a client whose queue
// is full is closed as too slow, so it never holds anyone else up. sched:
// see push.
func (c *client) enqueue(b []byte, sched *[]*client) {
	if c.push(b, c.gw.limits.QueueLen, c.gw.limits.QueueBytes, sched) {
		return
	}
	select {
	case <-c.closing: // closing anyway: not a slow client
	default:
		c.tooSlow()
	}
}

// tooSlow closes a client that does not read what it is sent.
func (c *client) tooSlow() {
	c.gw.metrics.slowCloses.Inc()
	c.closeWith(chat.CloseTooSlow, "too slow: send queue full")
}

// closeWith asks for the socket to be closed with code after what is
// queued; the first call wins.
func (c *client) closeWith(code int, text string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText = code, text
		close(c.closing)
	})
	c.kick()
}

// flush writes what c has queued, with a due ping or pong, in one
// non-blocking write; a flusher worker runs it for the socket in line
// (c.writing). What the kernel does not take at once is written by a
// goroutine of the socket's own, and so is the close, which may wait
// for the client.
func (c *client) flush() {
	closing := isClosed(c.closing)
	// A busy socket (written to more often than every WriteDelay, on
	// average) written to less than WriteDelay ago waits out the rest, so
	// what arrives meanwhile joins this write. Any other socket is written
	// to at once.
	var now time.Time
	if d := c.gw.flusher.delay; d > 0 {
		now = time.Now()
		if due := c.lastWrite.Add(d); !closing && c.writeGap < d && now.Before(due) {
			c.gw.flusher.hold(c, due)
			return
		}
	}
	c.qmu.Lock()
	if !c.hasWork() {
		c.writing = false
		c.qmu.Unlock()
		return
	}
	q, ping, pong := c.queue, c.pingDue && !closing, c.pong
	c.queue, c.qbytes, c.spare, c.pingDue, c.pong = c.spare, 0, nil, false, nil
	c.qmu.Unlock()
	select {
	case c.room <- struct{}{}:
	default:
	}
	if !now.IsZero() {
		c.wroteAt(now)
	}
	bp := c.frames(q, ping, pong, closing)
	c.giveBack(q)
	if closing {
		go c.finish(bp)
		return
	}
	if ping {
		c.pinger.Reset(c.gw.limits.PingInterval)
	}
	n, err := c.tryWrite(*bp)
	switch {
	case err != nil:
		c.gw.putFrames(bp)
		c.writeFailed()
	case n < len(*bp):
		go c.writeRest(bp, n)
	default:
		c.gw.putFrames(bp)
		c.wrote()
	}
}

// hasWork says whether c has something to write (qmu held).
func (c *client) hasWork() bool {
	return len(c.queue) > 0 || c.pingDue || c.pong != nil || isClosed(c.closing)
}

// wroteAt records a write's time, and the running average of the time
// between writes (from a second for a new socket: quiet until shown busy).
func (c *client) wroteAt(now time.Time) {
	gap := time.Second
	if !c.lastWrite.IsZero() {
		gap = min(now.Sub(c.lastWrite), time.Second)
	}
	if c.writeGap == 0 {
		c.writeGap = gap
	}
	c.writeGap += (gap - c.writeGap) / 4
	c.lastWrite = now
}

// wrote ends one write: the socket goes back in line, behind the others,
// if more was queued meanwhile; else its writes rest until the next push.
func (c *client) wrote() {
	c.qmu.Lock()
	more := c.hasWork()
	c.writing = more
	c.qmu.Unlock()
	if more {
		c.gw.flusher.add(c)
	}
}

// tryWrite writes b without waiting: it returns how much the kernel
// took at once.
func (c *client) tryWrite(b []byte) (int, error) {
	n := 0
	var werr error
	err := c.raw.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := syscall.Write(int(fd), b[n:])
			if m > 0 {
				n += m
				continue
			}
			if err == syscall.EINTR {
				continue
			}
			if err != syscall.EAGAIN {
				werr = err
			}
			break
		}
		return true // never wait here: writeRest does
	})
	if err == nil {
		err = werr
	}
	return n, err
}

// writeRest writes the part of a write the kernel did not take at once
// (a slow client, or a burst bigger than the socket's buffer), waiting
// up to writeWait, then hands the socket back to the flusher.
func (c *client) writeRest(bp *[]byte, n int) {
	_ = c.tcp.SetWriteDeadline(time.Now().Add(writeWait))
	_, err := c.tcp.Write((*bp)[n:])
	_ = c.tcp.SetWriteDeadline(time.Time{}) // tryWrite would refuse after it
	c.gw.putFrames(bp)
	if err != nil {
		c.writeFailed()
		return
	}
	c.wrote()
}

// writeFailed ends a socket whose write failed: the connection is gone,
// so there is no close frame to send.
func (c *client) writeFailed() {
	c.closeWith(websocket.CloseAbnormalClosure, "")
	c.end()
}

// finish ends the socket's writes: what was queued last (say, the error
// frames before a 4008) and the close frame, in one write.
func (c *client) finish(bp *[]byte) {
	_ = c.tcp.SetWriteDeadline(time.Now().Add(writeWait))
	_, _ = c.tcp.Write(*bp)
	c.gw.putFrames(bp)
	c.end()
}

// end closes the connection; the socket's writes stay claimed (writing),
// so none starts again.
func (c *client) end() {
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

// frames encodes one write: q as text frames of up to maxBatch objects
// separated by '\n', then the control frames asked for.
func (c *client) frames(q [][]byte, ping bool, pong []byte, closing bool) *[]byte {
	bp := c.gw.getFrames()
	b := (*bp)[:0]
	for rest := q; len(rest) > 0; {
		objects := rest[:min(len(rest), maxBatch)]
		rest = rest[len(objects):]
		size := len(objects) - 1
		for _, o := range objects {
			size += len(o)
		}
		b = appendFrameHeader(b, websocket.TextMessage, size)
		for i, o := range objects {
			if i > 0 {
				b = append(b, '\n')
			}
			b = append(b, o...)
		}
	}
	if len(q) > 0 {
		c.gw.metrics.objectsOut.Add(float64(len(q)))
	}
	if pong != nil {
		b = appendControl(b, websocket.PongMessage, pong)
	}
	if ping {
		b = appendControl(b, websocket.PingMessage, nil)
	}
	if closing && c.closeCode != websocket.CloseAbnormalClosure {
		b = appendControl(b, websocket.CloseMessage, websocket.FormatCloseMessage(c.closeCode, c.closeText))
	}
	*bp = b
	return bp
}

// maxControlPayload is the protocol's limit for a control frame's payload.
const maxControlPayload = 125

func appendControl(b []byte, opcode int, payload []byte) []byte {
	payload = payload[:min(len(payload), maxControlPayload)]
	b = appendFrameHeader(b, opcode, len(payload))
	return append(b, payload...)
}

// appendFrameHeader appends the header of a final, unmasked server frame
// (RFC 6455 5.2): no compression is negotiated, so frames are written
// here rather than through gorilla, whose writes block.
func appendFrameHeader(b []byte, opcode, size int) []byte {
	b = append(b, 0x80|byte(opcode))
	switch {
	case size < 126:
		return append(b, byte(size))
	case size <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(b, 126), uint16(size))
	default:
		return binary.BigEndian.AppendUint64(append(b, 127), uint64(size))
	}
}

// getFrames and putFrames keep write buffers in the gateway's pool,
// shared by all sockets rather than one per socket.
func (g *gateway) getFrames() *[]byte {
	if bp, _ := g.batches.Get().(*[]byte); bp != nil {
		return bp
	}
	return new([]byte)
}

// maxPooledBatch keeps rare huge writes from staying in the pool.
const maxPooledBatch = 256 << 10

func (g *gateway) putFrames(bp *[]byte) {
	if cap(*bp) <= maxPooledBatch {
		*bp = (*bp)[:0]
		g.batches.Put(bp)
	}
}
