package wsconn

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// hijacker hands gorilla an owned connection when it takes over the
// request's.
type hijacker struct {
	http.ResponseWriter
	conn *owned
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	rc := http.NewResponseController(h.ResponseWriter)
	conn, rw, err := rc.Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.conn = &owned{Conn: conn}
	return h.conn, rw, nil
}

// owned is the connection gorilla reads from. Until own, it is the
// network connection (the handshake); after, gorilla's writes are its
// control frames, each one whole Write (gorilla's WriteControl), and go
// to the Conn: a pong is queued, a close closes the socket with its
// code. Write deadlines then belong to the Conn's writer.
type owned struct {
	net.Conn
	to atomic.Pointer[Conn]
}

func (o *owned) own(c *Conn) { o.to.Store(c) }

// Read hands gorilla the socket's bytes through inbound, which keeps
// pings and pongs from it.
func (o *owned) Read(b []byte) (int, error) {
	c := o.to.Load()
	if c == nil {
		return o.Conn.Read(b)
	}
	if err := c.wait(false); err != nil { // a message has begun: park for the rest
		return 0, err
	}
	n := copy(b, c.in.output())
	c.in.consume(c.srv, n)
	return n, nil
}

func (o *owned) Write(b []byte) (int, error) {
	c := o.to.Load()
	if c == nil {
		return o.Conn.Write(b)
	}
	opcode, payload, err := parseControl(b)
	if err != nil {
		return 0, err
	}
	switch opcode {
	case websocket.PongMessage:
		c.queuePong(payload)
	case websocket.CloseMessage:
		code, reason := websocket.CloseNoStatusReceived, ""
		if len(payload) >= 2 {
			code, reason = int(binary.BigEndian.Uint16(payload)), string(payload[2:])
		}
		c.Close(code, reason)
	}
	return len(b), nil
}

func (o *owned) SetWriteDeadline(t time.Time) error {
	if o.to.Load() == nil {
		return o.Conn.SetWriteDeadline(t)
	}
	return nil
}

func (o *owned) SetDeadline(t time.Time) error {
	if o.to.Load() == nil {
		return o.Conn.SetDeadline(t)
	}
	return o.Conn.SetReadDeadline(t)
}

// errNotControl: gorilla wrote something other than one whole unmasked
// control frame, which this package never asks it to.
var errNotControl = errors.New("wsconn: gorilla wrote other than a control frame")

// parseControl reads one whole server control frame (RFC 6455 5.2, 5.5):
// final, unmasked, a payload of at most 125 bytes.
func parseControl(b []byte) (int, []byte, error) {
	if len(b) < 2 || b[0]&0x80 == 0 || b[1]&0x80 != 0 {
		return 0, nil, errNotControl
	}
	opcode, n := int(b[0]&0x0f), int(b[1]&0x7f)
	if opcode < websocket.CloseMessage || n > maxControlPayload || len(b) != 2+n {
		return 0, nil, errNotControl
	}
	return opcode, b[2:], nil
}
