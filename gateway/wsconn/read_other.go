//go:build !unix

package wsconn

import "io"

// readSocket reads what the socket has into the read buffer. Without a
// non-blocking read here it blocks in the read call, holding the
// buffer: the behaviour is the same, an idle socket costs more.
func (c *Conn) readSocket() error {
	in := &c.in
	if in.buf != nil && in.r == in.w {
		in.compact(c.srv)
	}
	if in.buf == nil {
		in.buf = c.srv.getReadBuffer()
	}
	n, err := c.tcp.Read((*in.buf)[in.u:])
	in.u += n
	if n == 0 && err == nil {
		err = io.EOF
	}
	if n > 0 {
		return nil
	}
	return err
}

// readLate has no way around a passed deadline here.
func (c *Conn) readLate() (bool, error) { return false, nil }

// bytesWaiting cannot tell here; the socket's reader, parked with a read
// deadline, finds the silence instead.
func (c *Conn) bytesWaiting() bool { return true }
