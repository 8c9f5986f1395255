package wsconn

import (
	"encoding/binary"

	"github.com/gorilla/websocket"
)

// frames encodes one write: q as text frames of up to MaxObjectsPerFrame
// objects separated by '\n', then the control frames asked for.
func (c *Conn) frames(q [][]byte, ping bool, pong []byte, closing bool) *[]byte {
	bp := c.srv.getBuffer()
	b := (*bp)[:0]
	for rest := q; len(rest) > 0; {
		objects := rest[:min(len(rest), MaxObjectsPerFrame)]
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
	if h := c.srv.opts.OnWrite; h != nil && len(q) > 0 {
		h(len(q))
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
