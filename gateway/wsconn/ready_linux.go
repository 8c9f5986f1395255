package wsconn

import (
	"sync"
	"syscall"
)

// readiness is the Server's readiness loop (see serve.go): one epoll
// instance over the served sockets, each registered one-shot, and one
// goroutine waiting on it that starts a reader run for each socket that
// becomes readable. A socket is watched again only when its run ends, so
// at most one run reads it at a time.
type readiness struct {
	epfd int
	wake [2]int // a pipe: Close writes to it to stop the loop
	done chan struct{}

	mu     sync.RWMutex // held to read, write, or close epfd; closed below it
	closed bool
	conns  map[uint64]*Conn // served sockets by id (epoll's data); id 0 is wake
	nextID uint64
}

// readyEvents wake a socket's run once: bytes, the client's FIN, an error.
const readyEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

// readyBatch is how many events one wait takes.
const readyBatch = 256

func newReadiness() (*readiness, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	r := &readiness{epfd: epfd, done: make(chan struct{}), conns: map[uint64]*Conn{}}
	if err := syscall.Pipe2(r.wake[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		_ = syscall.Close(epfd)
		return nil, err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, r.wake[0], &ev); err != nil {
		_ = syscall.Close(epfd)
		_ = syscall.Close(r.wake[0])
		_ = syscall.Close(r.wake[1])
		return nil, err
	}
	go r.loop()
	return r, nil
}

// close stops the loop. Sockets still served by then are left to their
// ends (Server.Close ends them); none gets another run.
func (r *readiness) close() {
	if r == nil {
		return
	}
	_, _ = syscall.Write(r.wake[1], []byte{0})
	<-r.done
	r.mu.Lock()
	r.closed = true
	_ = syscall.Close(r.epfd)
	_ = syscall.Close(r.wake[0])
	_ = syscall.Close(r.wake[1])
	r.mu.Unlock()
}

func (r *readiness) loop() {
	defer close(r.done)
	events := make([]syscall.EpollEvent, readyBatch)
	for {
		n, err := syscall.EpollWait(r.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			// Not expected (epfd is ours until close). New sockets and
			// runs ending then get readers of their own; the watched ones
			// are closed by the pinger as silent, and reconnect.
			r.mu.Lock()
			r.closed = true
			r.mu.Unlock()
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				return
			}
			r.mu.RLock()
			c := r.conns[id]
			r.mu.RUnlock()
			if c != nil && c.startRun() {
				go c.run()
			}
		}
	}
}

// add watches c from now on; an error leaves it unwatched.
func (r *readiness) add(c *Conn) error {
	if r == nil {
		return errNoReadiness
	}
	r.mu.Lock()
	r.nextID++
	c.readyID = r.nextID
	r.conns[c.readyID] = c
	r.mu.Unlock()
	err := r.ctl(c, syscall.EPOLL_CTL_ADD)
	if err != nil {
		r.remove(c)
	}
	return err
}

// arm watches c again, after a run.
func (r *readiness) arm(c *Conn) error { return r.ctl(c, syscall.EPOLL_CTL_MOD) }

// ctl registers c's descriptor. It runs inside RawConn.Control, which
// keeps the descriptor open meanwhile: a connection closing concurrently
// fails here rather than another connection reusing its number.
func (r *readiness) ctl(c *Conn, op int) error {
	if r == nil {
		return errNoReadiness
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return errNoReadiness
	}
	ev := syscall.EpollEvent{Events: readyEvents, Fd: int32(uint32(c.readyID)), Pad: int32(uint32(c.readyID >> 32))}
	var err error
	if cerr := c.raw.Control(func(fd uintptr) { err = syscall.EpollCtl(r.epfd, op, int(fd), &ev) }); cerr != nil {
		return cerr
	}
	return err
}

// remove forgets c, which has ended: closing its descriptor took it out
// of epoll.
func (r *readiness) remove(c *Conn) {
	if r == nil {
		return
	}
	r.mu.Lock() // readyID is set under it, maybe by another goroutine
	if c.readyID != 0 {
		delete(r.conns, c.readyID)
	}
	r.mu.Unlock()
}

// served is how many sockets are watched or being read.
func (r *readiness) served() int {
	if r == nil {
		return 0
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.conns)
}
