package wsconn

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/natter/natter/services/poll"
)

// echoServerOf is echoServer, with the Server at hand.
func echoServerOf(t *testing.T, opts Options) (*Server, string, <-chan int) {
	t.Helper()
	s := NewServer(opts)
	codes := make(chan int, 1024)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.Upgrade(w, r)
		if err != nil {
			return
		}
		c.Serve(func(data []byte, text bool) {
			if text {
				c.Send(data)
			}
		}, func() {
			if !isClosed(c.Done()) {
				t.Error("onEnd before the socket ended")
			}
			codes <- c.CloseCode()
		})
	}))
	t.Cleanup(func() {
		hs.Close()
		s.Close()
	})
	return s, "ws" + strings.TrimPrefix(hs.URL, "http"), codes
}

// readers counts the goroutines reading sockets (Read, or Serve's runs):
// parked in the poller (shallow), and blocked inside gorilla's reads
// (deep).
func readers() (shallow, deep int) {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		switch {
		case !strings.Contains(g, "wsconn.(*Conn).read("):
		case strings.Contains(g, "github.com/gorilla/websocket."):
			deep++
		case strings.Contains(g, "internal/poll.(*FD).RawRead"):
			shallow++
		}
	}
	return shallow, deep
}

// parked waits until n served sockets are idle: no reader goroutine at
// all, each watched by the readiness loop (or, without one, n readers
// parked in the poller), none in gorilla, and no read buffer held.
func parked(t *testing.T, s *Server, n int) {
	t.Helper()
	wantParked, wantServed := 0, n
	if s.ready == nil {
		wantParked, wantServed = n, 0
	}
	poll.Until(t, 10*time.Second, func() error {
		shallow, deep := readers()
		held, served := s.readsHeld.Load(), s.ready.served()
		if shallow != wantParked || deep != 0 || held != 0 || served != wantServed {
			return fmt.Errorf("%d readers parked, %d in gorilla, %d read buffers held, %d sockets watched; want %d, 0, 0, %d",
				shallow, deep, held, served, wantParked, wantServed)
		}
		return nil
	})
}

// clientFrame encodes a masked client frame (RFC 6455 5.2).
func clientFrame(opcode int, fin bool, payload string) []byte {
	b0 := byte(opcode)
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = binary.BigEndian.AppendUint16(append(b, 0x80|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x80|127), uint64(n))
	}
	key := []byte{1, 2, 3, 4}
	b = append(b, key...)
	for i := range len(payload) {
		b = append(b, payload[i]^key[i&3])
	}
	return b
}

func write(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

func readText(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	typ, b, err := c.ReadMessage()
	if err != nil || typ != websocket.TextMessage {
		t.Fatalf("read: type %d, %v", typ, err)
	}
	return string(b)
}

// An idle socket has no reader goroutine and holds no read buffer; a
// frame starts a reader run, and the socket is idle again after.
func TestIdleSocketParkedThenWoken(t *testing.T) {
	s, url, _ := echoServerOf(t, testOptions())
	c := dial(t, url)
	parked(t, s, 1)
	for _, msg := range []string{"wake", strings.Repeat("x", 3000)} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if got := readText(t, c); got != msg {
			t.Fatalf("echo of %d bytes: %d bytes", len(msg), len(got))
		}
		parked(t, s, 1)
	}
}

// Many idle sockets: no reader goroutine, no buffer held, each still
// answers.
func TestManyIdleSocketsParked(t *testing.T) {
	const n = 200
	s, url, _ := echoServerOf(t, testOptions())
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		conns[i] = dial(t, url)
	}
	parked(t, s, n)
	for i, c := range conns {
		msg := fmt.Sprint("socket ", i)
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if got := readText(t, c); got != msg {
			t.Fatalf("socket %d echoed %q", i, got)
		}
	}
	parked(t, s, n)
}

// A socket that answers pings but sends nothing else stays open past
// the silence limit, and stays idle: pongs never wake gorilla.
func TestPongsKeepIdleSocketParked(t *testing.T) {
	opts := testOptions()
	// Long enough that a loaded machine answers each ping in time.
	opts.PingInterval = 250 * time.Millisecond
	s, url, codes := echoServerOf(t, opts)
	c := dial(t, url)
	var pings atomic.Int32
	c.SetPingHandler(func(data string) error {
		pings.Add(1)
		return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	msgs := make(chan string, 1)
	go func() {
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(b)
		}
	}()
	// Five pings answered: two and a half times the silence limit.
	poll.Until(t, 10*time.Second, func() error {
		if n := pings.Load(); n < 5 {
			return fmt.Errorf("%d pings so far", n)
		}
		return nil
	})
	parked(t, s, 1)
	if err := c.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if got := <-msgs; got != "still here" {
		t.Fatalf("echo %q", got)
	}
	select {
	case code := <-codes:
		t.Fatalf("socket closed with %d", code)
	default:
	}
}

// Frames arriving byte by byte, a ping between the fragments of a
// message, and two messages in one write all read back whole and in
// order.
func TestFramesSplitAndJoined(t *testing.T) {
	s, url, _ := echoServerOf(t, testOptions())
	c := dial(t, url)
	pongs := make(chan string, 4)
	c.SetPongHandler(func(data string) error { pongs <- data; return nil })
	parked(t, s, 1)
	raw := c.NetConn()
	// A 300-byte message (16-bit length): its header one byte per write,
	// each piece read while the socket stays idle holding the buffer;
	// then the payload in pieces, which gorilla waits for.
	msg := strings.Repeat("split ", 50)
	frame := clientFrame(websocket.TextMessage, true, msg)
	const header = 2 + 2 + 4
	for i := range header - 1 {
		write(t, raw, frame[i:i+1])
		poll.Until(t, 10*time.Second, func() error {
			if _, deep := readers(); deep != 0 || s.readsHeld.Load() != 1 {
				return fmt.Errorf("header byte %d not read yet", i)
			}
			return nil
		})
	}
	write(t, raw, frame[header-1:100])
	poll.Until(t, 10*time.Second, func() error {
		if _, deep := readers(); deep != 1 {
			return fmt.Errorf("gorilla not reading the payload")
		}
		return nil
	})
	write(t, raw, frame[100:200])
	write(t, raw, frame[200:])
	if got := readText(t, c); got != msg {
		t.Fatalf("split frame echoed as %q", got)
	}
	// Fragments with a ping between them, then a second message, in one
	// write.
	var b []byte
	b = append(b, clientFrame(websocket.TextMessage, false, "hel")...)
	b = append(b, clientFrame(websocket.PingMessage, true, "mid")...)
	b = append(b, clientFrame(0, true, "lo")...)
	b = append(b, clientFrame(websocket.TextMessage, true, "second")...)
	b = append(b, clientFrame(websocket.PingMessage, true, "end")...)
	write(t, raw, b)
	msgs := make(chan string, 4)
	go func() { // reading runs the pong handler too
		for {
			_, m, err := c.ReadMessage()
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(m)
		}
	}()
	var got []string // the echoes may share a frame
	for m := range msgs {
		if got = append(got, strings.Split(m, "\n")...); len(got) >= 2 {
			break
		}
	}
	if strings.Join(got, ",") != "hello,second" {
		t.Fatalf("echoes %q, want hello, second", got)
	}
	// A ping not yet answered when the next comes may go unanswered (RFC
	// 6455 5.5.3): the last one is answered.
	p := <-pongs
	if p == "mid" {
		p = <-pongs
	}
	if p != "end" {
		t.Fatalf("pong %q, want mid then end, or end", p)
	}
	parked(t, s, 1)
}

// A client that sends part of a frame and then nothing is dropped at the
// silence limit, whether it stopped in the header (no reader: the pinger
// finds it) or in the payload (gorilla reading, to the read deadline).
func TestPartialFrameThenSilence(t *testing.T) {
	frame := clientFrame(websocket.TextMessage, true, strings.Repeat("p", 200))
	for _, cut := range []int{1, 3, 20} {
		t.Run(fmt.Sprint(cut, " bytes"), func(t *testing.T) {
			opts := testOptions()
			opts.PingInterval = 50 * time.Millisecond
			_, url, codes := echoServerOf(t, opts)
			c := dial(t, url)
			write(t, c.NetConn(), frame[:cut])
			wantCode(t, codes, websocket.CloseNormalClosure)
		})
	}
}

// sockets in the pinger's slots.
func (p *pinger) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, s := range p.slots {
		n += len(s)
	}
	return n
}

// Every socket is in the pinger's slots while open, and leaves them when
// it ends, however it ends.
func TestPingerFollowsSockets(t *testing.T) {
	s, url, codes := echoServerOf(t, testOptions())
	conns := make([]*websocket.Conn, 20)
	for i := range conns {
		conns[i] = dial(t, url)
	}
	parked(t, s, len(conns))
	if n := s.pinger.len(); n != len(conns) {
		t.Fatalf("%d sockets in the pinger, want %d", n, len(conns))
	}
	for i, c := range conns {
		if i%2 == 0 {
			_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""))
		} else {
			_ = c.Close()
		}
	}
	poll.Until(t, 10*time.Second, func() error {
		if n, ended := s.pinger.len(), len(codes); n != 0 || ended != len(conns) {
			return fmt.Errorf("%d sockets in the pinger, %d ended", n, ended)
		}
		return nil
	})
}
