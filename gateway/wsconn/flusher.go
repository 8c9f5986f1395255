package wsconn

import (
	"slices"
	"sync"
	"time"
)

// flusher is the Server's writers: see Server.
type flusher struct {
	mu       sync.Mutex
	stopped  bool
	line     []*Conn // sockets to write, oldest first
	head     int     // line[:head] have been taken
	sleeping int     // workers waiting on wake
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
	c   *Conn
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
// (Server.Close). A socket still waiting for a write then, or coming back
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
func (f *flusher) add(cs ...*Conn) {
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
func (f *flusher) hold(c *Conn, due time.Time) {
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
	taken := make([]*Conn, 0, flushChunk)
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
		taken = append(taken[:0], f.line[f.head:f.head+n]...)
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
		for _, c := range taken {
			c.flush()
		}
	}
}
