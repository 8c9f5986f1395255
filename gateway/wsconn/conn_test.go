package wsconn

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

const tooSlow = 4009

func testOptions() Options {
	return Options{
		ReadLimit: 4096, QueueLen: 64, QueueBytes: 64 << 10, PingInterval: 10 * time.Second, Workers: 2,
		TooSlowCode: tooSlow, TooSlowReason: "too slow",
	}
}

// echoServer serves sockets that send back every text message they read,
// and reports each socket's close code once it is done.
func echoServer(t *testing.T, opts Options) (url string, codes <-chan int) {
	t.Helper()
	_, url, codes = echoServerOf(t, opts)
	return url, codes
}

func dial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return c
}

func wantCode(t *testing.T, codes <-chan int, want int) {
	t.Helper()
	select {
	case got := <-codes:
		if got != want {
			t.Fatalf("server closed with %d, want %d", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("server socket not done within 10s (want close %d)", want)
	}
}

func TestEcho(t *testing.T) {
	url, _ := echoServer(t, testOptions())
	c := dial(t, url)
	for _, msg := range []string{"a", strings.Repeat("b", 200), strings.Repeat("c", 4000)} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		typ, got, err := c.ReadMessage()
		if err != nil || typ != websocket.TextMessage || string(got) != msg {
			t.Fatalf("echo of %d bytes: type %d, %d bytes, %v", len(msg), typ, len(got), err)
		}
	}
}

// gorilla's own answers while reading (a pong, the echo of a close) reach
// the client through this package's writes, after what was queued.
func TestClientPingAndCloseAnswered(t *testing.T) {
	url, codes := echoServer(t, testOptions())
	c := dial(t, url)
	pongs := make(chan string, 1)
	c.SetPongHandler(func(data string) error { pongs <- data; return nil })
	closes := make(chan int, 1)
	c.SetCloseHandler(func(code int, _ string) error { closes <- code; return nil })
	msgs, ended := make(chan string, 1), make(chan error, 1)
	go func() { // the handlers run while reading
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				ended <- err
				return
			}
			msgs <- string(b)
		}
	}()
	if err := c.WriteMessage(websocket.TextMessage, []byte("queued")); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := <-msgs; got != "queued" {
		t.Fatalf("echo %q", got)
	}
	if got := <-pongs; got != "are you there" {
		t.Fatalf("pong %q, want the ping's payload", got)
	}
	if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "bye"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := <-ended; !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("after the close: %v, want the close echoed", err)
	}
	if code := <-closes; code != websocket.CloseGoingAway {
		t.Fatalf("close echoed with %d", code)
	}
	wantCode(t, codes, websocket.CloseGoingAway)
}

// The byte-free close paths: a frame over the read limit closes with
// 1009, a frame the protocol forbids with 1002; gorilla decides the code,
// this package writes the close.
func TestReadClosePaths(t *testing.T) {
	tests := []struct {
		name  string
		write func(c *websocket.Conn) error
		want  int
	}{
		{"frame over the read limit", func(c *websocket.Conn) error {
			return c.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte("x"), 5000))
		}, websocket.CloseMessageTooBig},
		{"reserved opcode", func(c *websocket.Conn) error {
			_, err := c.NetConn().Write([]byte{0x83, 0x80, 0, 0, 0, 0}) // masked, empty
			return err
		}, websocket.CloseProtocolError},
		{"unmasked client frame", func(c *websocket.Conn) error {
			_, err := c.NetConn().Write([]byte{0x81, 0x01, 'x'})
			return err
		}, websocket.CloseProtocolError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url, codes := echoServer(t, testOptions())
			c := dial(t, url)
			if err := tt.write(c); err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, tt.want) {
				t.Fatalf("client read %v, want close %d", err, tt.want)
			}
			wantCode(t, codes, tt.want)
		})
	}
}

// A client that stops reading is closed as too slow once its queue passes
// its byte budget; the server does not wait for it.
func TestSlowReaderClosed(t *testing.T) {
	url, got := serverSockets(t, testOptions())
	dial(t, url) // never read
	c := <-got
	chunk := bytes.Repeat([]byte("y"), 16<<10)
	sent := 0
	for c.Send(chunk) {
		if sent++; sent > 10000 { // 160 MiB: far past any socket buffer
			t.Fatal("a client that never reads was never found too slow")
		}
	}
	if code := c.CloseCode(); code != tooSlow {
		t.Fatalf("closed with %d, want %d", code, tooSlow)
	}
	select {
	case <-c.Done():
	case <-time.After(2 * writeWait):
		t.Fatal("the too-slow socket did not end")
	}
}

// What the writers frame must read back, through a real client, as the
// frames meant, whatever the payload length's encoding (7-bit, 16-bit,
// 64-bit) and however many objects.
func TestFramesReadBack(t *testing.T) {
	obj := func(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }
	many := make([][]byte, MaxObjectsPerFrame+5)
	for i := range many {
		many[i] = []byte(`{"n":1}`)
	}
	writes := []struct {
		name string
		q    [][]byte
		want []string // text frames
	}{
		{"one small", [][]byte{obj(10, 'a')}, []string{string(obj(10, 'a'))}},
		{"125 bytes, the largest 7-bit length", [][]byte{obj(62, 'b'), obj(62, 'c')}, []string{string(obj(62, 'b')) + "\n" + string(obj(62, 'c'))}},
		{"16-bit length", [][]byte{obj(126, 'd')}, []string{string(obj(126, 'd'))}},
		{"64-bit length", [][]byte{obj(70000, 'e')}, []string{string(obj(70000, 'e'))}},
		{"more than a frame holds", many, []string{
			strings.Repeat(`{"n":1}`+"\n", MaxObjectsPerFrame-1) + `{"n":1}`,
			strings.Repeat(`{"n":1}`+"\n", 4) + `{"n":1}`,
		}},
	}
	srv := &Server{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		c := &Conn{srv: srv, closeCode: tooSlow, closeText: "too slow"}
		for i, wr := range writes {
			last := i == len(writes)-1
			bp := c.frames(wr.q, last, []byte("p"), last)
			if _, err := conn.NetConn().Write(*bp); err != nil {
				return
			}
		}
		_, _, _ = conn.ReadMessage() // until the client goes
	}))
	defer hs.Close()
	conn := dial(t, "ws"+strings.TrimPrefix(hs.URL, "http"))
	pongs, pings := 0, 0
	conn.SetPongHandler(func(data string) error {
		if data != "p" {
			t.Errorf("pong payload %q", data)
		}
		pongs++
		return nil
	})
	conn.SetPingHandler(func(string) error { pings++; return nil })
	for _, wr := range writes {
		for i, want := range wr.want {
			typ, got, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("%s: frame %d: %v", wr.name, i, err)
			}
			if typ != websocket.TextMessage || string(got) != want {
				t.Fatalf("%s: frame %d: type %d, %d bytes, want %d bytes", wr.name, i, typ, len(got), len(want))
			}
		}
	}
	_, _, err := conn.ReadMessage()
	if !websocket.IsCloseError(err, tooSlow) {
		t.Fatalf("after the frames: %v, want close %d", err, tooSlow)
	}
	if pongs != len(writes) || pings != 1 {
		t.Fatalf("%d pongs and %d pings, want %d and 1", pongs, pings, len(writes))
	}
}

// WriteDelay holds back only busy sockets: the running average of the
// time between writes starts at a second, and falls below the delay only
// after a run of writes closer together than it.
func TestWriteGap(t *testing.T) {
	c := &Conn{}
	now := time.Now()
	c.wroteAt(now)
	if c.writeGap != time.Second {
		t.Fatalf("a new socket's gap is %v, want 1s", c.writeGap)
	}
	n := 0
	for c.writeGap >= 20*time.Millisecond {
		now = now.Add(10 * time.Millisecond)
		c.wroteAt(now)
		if n++; n > 30 {
			t.Fatalf("after %d writes 10ms apart the gap is %v", n, c.writeGap)
		}
	}
	// A socket written every 50 ms (a busy direct conversation) is quiet.
	for range 30 {
		now = now.Add(50 * time.Millisecond)
		c.wroteAt(now)
	}
	if c.writeGap < 40*time.Millisecond {
		t.Fatalf("writes 50ms apart leave a gap of %v", c.writeGap)
	}
}

// A socket that goes silent (no pong to two pings) is dropped.
func TestSilentClientDropped(t *testing.T) {
	opts := testOptions()
	opts.PingInterval = 100 * time.Millisecond
	url, codes := echoServer(t, opts)
	c := dial(t, url)
	c.SetPingHandler(func(string) error { return nil }) // never answers
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	wantCode(t, codes, websocket.CloseNormalClosure)
}

// Frames share a write only when they queue up behind one under way: a
// burst to one socket arrives whole and in order, in fewer writes than
// frames.
func TestBurstCoalescesInOrder(t *testing.T) {
	opts := testOptions()
	opts.QueueLen, opts.QueueBytes, opts.Workers = 100000, 64<<20, 1
	var writes, objects atomic.Int64
	opts.OnWrite = func(n int) { writes.Add(1); objects.Add(int64(n)) }
	s := NewServer(opts)
	defer s.Close()
	const n = 10000
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.Upgrade(w, r)
		if err != nil {
			return
		}
		for i := range n {
			c.Send([]byte(strconv.Itoa(i)))
		}
		for {
			if _, _, err := c.Read(); err != nil {
				return
			}
		}
	}))
	defer hs.Close()
	c := dial(t, "ws"+strings.TrimPrefix(hs.URL, "http"))
	next := 0
	for next < n {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("after %d objects: %v", next, err)
		}
		for _, o := range strings.Split(string(b), "\n") {
			if o != strconv.Itoa(next) {
				t.Fatalf("object %q where %d was due", o, next)
			}
			next++
		}
	}
	if w := writes.Load(); w >= n || objects.Load() != n {
		t.Fatalf("%d objects in %d writes: want all, in fewer writes than objects", objects.Load(), w)
	}
}

// Without WriteDelay no socket is held back, however busy it was; with
// it, only a busy socket written to less than the delay ago.
func TestDelayPolicy(t *testing.T) {
	tests := []struct {
		name    string
		delay   time.Duration
		gap     time.Duration // the socket's average time between writes
		since   time.Duration // since its last write
		closing bool
		held    bool
	}{
		{"no delay, busy socket just written", 0, time.Millisecond, 0, false, false},
		{"delay, busy socket just written", 20 * time.Millisecond, time.Millisecond, time.Millisecond, false, true},
		{"delay, busy socket written long ago", 20 * time.Millisecond, time.Millisecond, time.Second, false, false},
		{"delay, quiet socket just written", 20 * time.Millisecond, time.Second, time.Millisecond, false, false},
		{"delay, closing socket", 20 * time.Millisecond, time.Millisecond, time.Millisecond, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{flusher: &flusher{delay: tt.delay, held: make(chan struct{}, 1)}}
			c := &Conn{srv: s, writeGap: tt.gap, lastWrite: time.Now().Add(-tt.since)}
			if _, held := c.delayed(tt.closing); held != tt.held {
				t.Fatalf("held %v, want %v", held, tt.held)
			}
		})
	}
}

// The HTTP servers bound reading a request (ops.ReadTimeout, so a
// trickled body cannot hold a connection); a socket outlives that bound,
// since the upgrade clears the connection's deadlines.
func TestSocketOutlivesHTTPReadTimeout(t *testing.T) {
	s := NewServer(testOptions())
	defer s.Close()
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.Upgrade(w, r)
		if err != nil {
			return
		}
		for {
			data, _, err := c.Read()
			if err != nil {
				return
			}
			c.Send(data)
		}
	}))
	const readTimeout = 100 * time.Millisecond
	hs.Config.ReadTimeout = readTimeout
	hs.Start()
	defer hs.Close()
	c := dial(t, "ws"+strings.TrimPrefix(hs.URL, "http"))
	start := time.Now()
	tick := time.NewTicker(readTimeout / 2)
	defer tick.Stop()
	for i := 0; time.Since(start) < 5*readTimeout; i++ {
		<-tick.C
		msg := strconv.Itoa(i)
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatalf("write after %v: %v", time.Since(start), err)
		}
		if _, got, err := c.ReadMessage(); err != nil || string(got) != msg {
			t.Fatalf("echo after %v: %q %v", time.Since(start), got, err)
		}
	}
}

// serverSockets serves sockets that read until they end, and hands each
// to the test.
func serverSockets(t *testing.T, opts Options) (url string, got <-chan *Conn) {
	t.Helper()
	s := NewServer(opts)
	t.Cleanup(s.Close)
	conns := make(chan *Conn, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.Upgrade(w, r)
		if err != nil {
			return
		}
		conns <- c
		for {
			if _, _, err := c.Read(); err != nil {
				return
			}
		}
	}))
	t.Cleanup(hs.Close)
	return "ws" + strings.TrimPrefix(hs.URL, "http"), conns
}

// WaitHalf holds a sender back while a socket's queue is more than half
// full: a client that reads lets it go on, one that does not is reported
// at the deadline, and neither is closed by it.
func TestWaitHalf(t *testing.T) {
	url, got := serverSockets(t, testOptions())
	client := dial(t, url)
	c := <-got
	// Fill the queue past half: the client reads nothing yet, so once
	// the kernel's buffers are full the queue stays.
	chunk := bytes.Repeat([]byte("z"), 1<<10)
	for i := 0; ; i++ {
		if i > 100000 {
			t.Fatal("queue never filled past half")
		}
		if !c.Send(chunk) {
			t.Fatal("socket closed while filling")
		}
		if !c.WaitHalf(time.Now().Add(100 * time.Millisecond)) {
			break // more than half full for 100 ms: the writes are stuck
		}
	}
	start := time.Now()
	if c.WaitHalf(start.Add(200 * time.Millisecond)) {
		t.Fatal("WaitHalf reported room in a queue more than half full that nobody reads")
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Fatalf("WaitHalf gave up after %s, before its deadline", waited)
	}
	if c.IsClosing() {
		t.Fatal("WaitHalf closed the socket")
	}
	// The client reads: room comes.
	go func() {
		for {
			if _, _, err := client.ReadMessage(); err != nil {
				return
			}
		}
	}()
	if !c.WaitHalf(time.Now().Add(10 * time.Second)) {
		t.Fatal("no room within 10s in the queue of a client reading")
	}
}
