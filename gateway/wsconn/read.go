package wsconn

import (
	"encoding/binary"
	"errors"
	"os"
	"time"

	"github.com/gorilla/websocket"
)

// An idle socket should cost little: no read buffer, and no reader
// goroutine (Serve), or one parked with a small stack (Read). gorilla
// blocks deep in its read path (a 4 KiB stack per socket) and is woken by
// every pong. So gorilla reads a message only once its first bytes are
// here (a reader run is started for them, or Conn.Read waits for them
// first through the runtime's poller: a shallow park), and the bytes it
// reads come through inbound, which answers pings and notes pongs itself
// and hands gorilla everything else, one message at a time: when gorilla
// returns a message it has nothing left buffered, and the run ends (the
// reader parks again).
//
// inbound is the socket's read side: bytes read from the socket, in a
// buffer taken from the Server's pool only while some are waiting, and
// where the byte stream is in its frames (RFC 6455 5.2). Only the reader
// goroutine uses it.
type inbound struct {
	buf *[]byte // nil while nothing waits
	r   int     // buf[r:w]: bytes for gorilla
	w   int     // buf[w:u]: bytes read, not yet looked at (the start of a
	u   int     // frame too short to tell, or a later message)

	remaining   uint64 // payload bytes of the current frame not yet passed
	fin         bool   // the current frame ends its message
	atEnd       bool   // buf[:w] ends a message: gorilla gets no more until it has read it
	transparent bool   // a close or a bad frame went by: pass everything, gorilla ends the socket
}

// readBufferSize (bytes) is the size of the pooled buffers a socket
// reads into: gorilla's default, a client frame or several in one read.
const readBufferSize = 4096

// output is what gorilla may read now.
func (in *inbound) output() []byte {
	if in.buf == nil {
		return nil
	}
	return (*in.buf)[in.r:in.w]
}

// consume takes n bytes of the output; a buffer left empty goes back to
// the pool.
func (in *inbound) consume(s *Server, n int) {
	in.r += n
	if in.r < in.w {
		return
	}
	in.compact(s)
}

// compact moves the bytes not yet looked at to the front, once gorilla
// has read the output; an empty buffer goes back to the pool.
func (in *inbound) compact(s *Server) {
	b := *in.buf
	in.u = copy(b, b[in.w:in.u])
	in.r, in.w = 0, 0
	if in.u == 0 {
		s.putReadBuffer(in.buf)
		in.buf = nil
	}
}

// filter looks at the bytes read (buf[w:u]) up to the end of the next
// message: data frames (and anything gorilla must see: a close, a bad
// frame) join the output; whole pings and pongs are handled here and
// dropped.
func (in *inbound) filter(c *Conn) {
	b := *in.buf
	for in.w < in.u && !in.atEnd {
		if in.transparent {
			in.w = in.u
			return
		}
		if in.remaining > 0 {
			n := min(in.remaining, uint64(in.u-in.w))
			in.w += int(n)
			in.remaining -= n
			in.atEnd = in.remaining == 0 && in.fin
			continue
		}
		if !in.frame(c, b) {
			return // the rest of a header (or of a ping) is still to come
		}
	}
}

// frame takes the frame starting at buf[w], whole header at least; false
// if not all of it is here yet.
func (in *inbound) frame(c *Conn, b []byte) bool {
	h := b[in.w:in.u]
	if len(h) < 2 {
		return false
	}
	opcode, n := int(h[0]&0x0f), uint64(h[1]&0x7f)
	clean, masked := h[0]&0x70 == 0, h[1]&0x80 != 0
	if (opcode == websocket.PingMessage || opcode == websocket.PongMessage) && clean && masked && h[0]&0x80 != 0 && n <= maxControlPayload {
		size := 6 + int(n)
		if len(h) < size {
			return false
		}
		payload := h[6:size]
		maskBytes(payload, h[2:6])
		c.control(opcode, payload)
		in.u = in.w + copy(b[in.w:], b[in.w+size:in.u])
		return true
	}
	if opcode > websocket.BinaryMessage || !clean || !masked {
		in.transparent = true // gorilla answers it: the close handshake, or 1002
		return true
	}
	size := 2 + 4
	switch n {
	case 126:
		size += 2
	case 127:
		size += 8
	}
	if len(h) < size {
		return false
	}
	switch n {
	case 126:
		n = uint64(binary.BigEndian.Uint16(h[2:]))
	case 127:
		n = binary.BigEndian.Uint64(h[2:])
	}
	in.w += size
	in.remaining, in.fin = n, h[0]&0x80 != 0
	in.atEnd = n == 0 && in.fin
	return true
}

func maskBytes(b, key []byte) {
	for i := range b {
		b[i] ^= key[i&3]
	}
}

// control handles a client's ping (answered with the next write) or pong
// (the client is alive).
func (c *Conn) control(opcode int, payload []byte) {
	if opcode == websocket.PingMessage {
		c.queuePong(payload)
		return
	}
	c.heard()
}

// heard notes that the client showed it is alive: a pong, or a message.
func (c *Conn) heard() { c.heardAt.Store(time.Now().UnixNano()) }

// silentFor is how long a socket may send nothing: two pings.
func (c *Conn) silentFor() time.Duration { return 2 * c.srv.opts.PingInterval }

// refreshDeadline moves the read deadline to silentFor after the client
// was last heard. The pinger does it, off the reader's stack, once a ping
// interval; the reader only when the deadline passes early (the client
// was heard since).
func (c *Conn) refreshDeadline() {
	_ = c.tcp.SetReadDeadline(time.Unix(0, c.heardAt.Load()).Add(c.silentFor()))
}

// wait returns once gorilla has something to read: the start of a
// message, a close, or an error to meet. Meanwhile the reader is parked
// in the poller, holding no buffer; or, idle, it returns errIdle as soon
// as the socket has nothing more to read.
func (c *Conn) wait(idle bool) error {
	in := &c.in
	if len(in.output()) > 0 {
		return nil
	}
	for {
		if in.buf != nil {
			in.atEnd = false // gorilla has read the message that ended there
			in.filter(c)
			if len(in.output()) > 0 {
				return nil
			}
		}
		if idle {
			read, err := c.readLate()
			if err == nil && !read {
				return errIdle
			}
			if err != nil {
				return err
			}
			continue
		}
		err := c.readSocket()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = c.deadlinePassed()
		}
		if err != nil {
			return err
		}
	}
}

// deadlinePassed decides what a passed read deadline means: nothing
// (the client was heard since it was set, or its bytes are waiting: the
// deadline moves on) or silence (the error).
func (c *Conn) deadlinePassed() error {
	if time.Since(time.Unix(0, c.heardAt.Load())) < c.silentFor() {
		c.refreshDeadline()
		return nil
	}
	late, err := c.readLate()
	if late || err != nil {
		return err
	}
	return os.ErrDeadlineExceeded
}

// getReadBuffer and putReadBuffer keep read buffers in the server's
// pool: a socket holds one only while bytes wait in it.
func (s *Server) getReadBuffer() *[]byte {
	s.readsHeld.Add(1)
	if bp, _ := s.reads.Get().(*[]byte); bp != nil {
		return bp
	}
	b := make([]byte, readBufferSize)
	return &b
}

func (s *Server) putReadBuffer(bp *[]byte) {
	s.readsHeld.Add(-1)
	s.reads.Put(bp)
}
