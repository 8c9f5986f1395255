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
	in := &c.in
	if in.buf != nil && in.r == in.w {
		in.compact(c.srv)
	}
	var n int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		if in.buf == nil {
			in.buf = c.srv.getReadBuffer()
		}
		for {
			n, rerr = syscall.Read(int(fd), (*in.buf)[in.u:])
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			if in.u == 0 { // park without a buffer
				c.srv.putReadBuffer(in.buf)
				in.buf = nil
			}
			return false
		}
		return true
	})
	switch {
	case err != nil:
		return err
	case rerr != nil:
		return os.NewSyscallError("read", rerr)
	case n == 0:
		return io.EOF
	}
	in.u += n
	return nil
}
