//go:build unix

package wsconn

import (
	"io"
	"os"
	"syscall"
)

// readSocket reads what the socket has into the read buffer, parking in
// the runtime's poller (not in a read call, whose stack is deep) until it
// has something; the buffer is taken only once there are bytes for it.
// The error is the poller's (a deadline, a closed socket), io.EOF, or the
// read's.
func (c *Conn) readSocket() error {
	var n int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, rerr = c.readNow(fd)
		return rerr != syscall.EAGAIN
	})
	if err != nil {
		return err
	}
	return c.took(n, rerr)
}

// readLate reads, without waiting, what the socket has: for a reader
// run, and for what came just as the read deadline passed (a pong late
// on a loaded machine: the poller refuses reads once the deadline has
// passed, so a pong waiting in the socket would be taken for silence).
// false if nothing was there.
func (c *Conn) readLate() (bool, error) {
	var n int
	var rerr error
	err := c.raw.Control(func(fd uintptr) { n, rerr = c.readNow(fd) })
	switch {
	case err != nil:
		return false, err
	case rerr == syscall.EAGAIN:
		return false, nil
	}
	return true, c.took(n, rerr)
}

// readNow is one non-blocking read into the read buffer; a buffer left
// empty goes back to the pool (EAGAIN: park without it).
func (c *Conn) readNow(fd uintptr) (int, error) {
	in := &c.in
	if in.buf != nil && in.r == in.w {
		in.compact(c.srv)
	}
	if in.buf == nil {
		in.buf = c.srv.getReadBuffer()
	}
	for {
		n, err := syscall.Read(int(fd), (*in.buf)[in.u:])
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN && in.u == 0 {
			c.srv.putReadBuffer(in.buf)
			in.buf = nil
		}
		return n, err
	}
}

// took accounts for a read that did not wait for more.
func (c *Conn) took(n int, err error) error {
	switch {
	case err != nil:
		return os.NewSyscallError("read", err)
	case n == 0:
		return io.EOF
	}
	c.in.u += n
	return nil
}

// bytesWaiting says whether the client's bytes wait unread in the socket.
func (c *Conn) bytesWaiting() bool {
	n := 0
	_ = c.raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	})
	return n > 0
}
