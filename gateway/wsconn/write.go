package wsconn

import (
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// push queues b unless the queue holds limit objects or b would take it
// past maxBytes. A socket that now needs a write is put in the writers'
// line, or in l when a fan-out lines its sockets up at once.
func (c *Conn) push(b []byte, limit, maxBytes int, l *Lineup) bool {
	c.qmu.Lock()
	if len(c.queue) >= limit || c.qbytes+len(b) > maxBytes || isClosed(c.closing) {
		c.qmu.Unlock()
		return false
	}
	c.queue = append(c.queue, b)
	c.qbytes += len(b)
	start := c.schedule()
	c.qmu.Unlock()
	switch {
	case !start:
	case l != nil:
		l.conns = append(l.conns, c)
	default:
		c.srv.flusher.add(c)
	}
	return true
}

// schedule says whether the caller, holding qmu, must put c in the
// writers' line: no write of c's is in line or under way, and its writes
// have not ended.
func (c *Conn) schedule() bool {
	if c.writing {
		return false
	}
	c.writing = true
	return true
}

// kick makes sure a write comes (for a ping, a pong or the close).
func (c *Conn) kick() {
	c.qmu.Lock()
	start := c.schedule()
	c.qmu.Unlock()
	if start {
		c.srv.flusher.add(c)
	}
}

// ping is the pinger's visit: a silent socket is closed; else the next
// write sends a ping, and a socket that needs a write for it joins l.
// The read deadline (for a reader parked inside a message) follows the
// last pong here, off the reader's stack.
func (c *Conn) ping(l *Lineup) {
	if c.silent() {
		c.closeSilent()
		return
	}
	c.refreshDeadline()
	c.qmu.Lock()
	c.pingDue = true
	start := c.schedule()
	c.qmu.Unlock()
	if start {
		l.conns = append(l.conns, c)
	}
}

// queuePong answers a client's ping with the next write.
func (c *Conn) queuePong(payload []byte) {
	c.qmu.Lock()
	c.pong = append([]byte{}, payload...) // not nil, even empty
	c.qmu.Unlock()
	c.kick()
}

// maxSpare is the largest queue slice a socket keeps between writes.
const maxSpare = 16

// giveBack returns a written slice for reuse, unless it grew big (an idle
// socket keeps at most a small one).
func (c *Conn) giveBack(q [][]byte) {
	if cap(q) > maxSpare {
		return
	}
	clear(q) // the objects themselves can go
	c.qmu.Lock()
	c.spare = q[:0]
	c.qmu.Unlock()
}

// flush writes what c has queued, with a due ping or pong, in one
// non-blocking write; a worker runs it for the socket in line (writing).
// What the kernel does not take at once is written by a goroutine of the
// socket's own, and so is the close, which may wait for the client.
func (c *Conn) flush() {
	closing := isClosed(c.closing)
	now, held := c.delayed(closing)
	if held {
		return
	}
	c.qmu.Lock()
	if !c.hasWork() {
		c.writing = false
		c.qmu.Unlock()
		return
	}
	q, ping, pong, drained := c.queue, c.pingDue && !closing, c.pong, c.drained
	c.queue, c.qbytes, c.spare, c.pingDue, c.pong, c.drained = c.spare, 0, nil, false, nil, nil
	c.qmu.Unlock()
	if drained != nil { // someone waits for room
		close(drained)
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
	n, err := c.tryWrite(*bp)
	switch {
	case err != nil:
		c.srv.putBuffer(bp)
		c.writeFailed()
	case n < len(*bp):
		go c.writeRest(bp, n)
	default:
		c.srv.putBuffer(bp)
		c.wrote()
	}
}

// delayed holds a busy socket (written to more often than WriteDelay,
// on average) written to less than WriteDelay ago until the rest has
// passed, so what arrives meanwhile joins this write; held says it did.
// now is the time to record for the write (zero without WriteDelay).
func (c *Conn) delayed(closing bool) (now time.Time, held bool) {
	d := c.srv.flusher.delay
	if d <= 0 {
		return time.Time{}, false
	}
	now = time.Now()
	if due := c.lastWrite.Add(d); !closing && c.writeGap < d && now.Before(due) {
		c.srv.flusher.hold(c, due)
		return now, true
	}
	return now, false
}

// hasWork says whether c has something to write (qmu held).
func (c *Conn) hasWork() bool {
	return len(c.queue) > 0 || c.pingDue || c.pong != nil || isClosed(c.closing)
}

// wroteAt records a write's time, and the running average of the time
// between writes (from a second for a new socket: quiet until shown busy).
func (c *Conn) wroteAt(now time.Time) {
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
func (c *Conn) wrote() {
	c.qmu.Lock()
	more := c.hasWork()
	c.writing = more
	c.qmu.Unlock()
	if more {
		c.srv.flusher.add(c)
	}
}

// tryWrite writes b without waiting: it returns how much the kernel
// took at once.
func (c *Conn) tryWrite(b []byte) (int, error) {
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
// up to writeWait, then hands the socket back to the writers.
func (c *Conn) writeRest(bp *[]byte, n int) {
	_ = c.tcp.SetWriteDeadline(time.Now().Add(writeWait))
	_, err := c.tcp.Write((*bp)[n:])
	_ = c.tcp.SetWriteDeadline(time.Time{}) // tryWrite would refuse after it
	c.srv.putBuffer(bp)
	if err != nil {
		c.writeFailed()
		return
	}
	c.wrote()
}

// writeFailed ends a socket whose write failed: the connection is gone,
// so there is no close frame to send.
func (c *Conn) writeFailed() {
	c.Close(websocket.CloseAbnormalClosure, "")
	c.end()
}

// finish ends the socket's writes: what was queued last (say, the error
// frames before a close) and the close frame, in one write.
func (c *Conn) finish(bp *[]byte) {
	_ = c.tcp.SetWriteDeadline(time.Now().Add(writeWait))
	_, _ = c.tcp.Write(*bp)
	c.srv.putBuffer(bp)
	c.end()
}

// end closes the connection; the socket's writes stay claimed (writing),
// so none starts again.
func (c *Conn) end() {
	c.srv.pinger.remove(c)
	_ = c.ws.Close() // out of the readiness loop's epoll too
	c.srv.ready.remove(c)
	c.qmu.Lock()
	c.ended = true
	if c.done != nil {
		close(c.done)
	}
	served := c.endedUnserved()
	c.qmu.Unlock()
	if served { // no run reads it: onEnd is ours, off the writers' goroutine
		go c.onEnd()
	}
}

// getBuffer and putBuffer keep write buffers in the server's pool,
// shared by all sockets rather than one per socket.
func (s *Server) getBuffer() *[]byte {
	if bp, _ := s.buffers.Get().(*[]byte); bp != nil {
		return bp
	}
	return new([]byte)
}

// maxPooledBuffer keeps rare huge writes from staying in the pool.
const maxPooledBuffer = 256 << 10

func (s *Server) putBuffer(bp *[]byte) {
	if cap(*bp) <= maxPooledBuffer {
		*bp = (*bp)[:0]
		s.buffers.Put(bp)
	}
}
