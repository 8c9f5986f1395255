package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// The flusher frames writes itself: what it writes must read back, through
// a real websocket client, as the frames it meant, whatever the payload
// length's encoding (7-bit, 16-bit, 64-bit) and however many objects.
func TestFramesReadBack(t *testing.T) {
	obj := func(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }
	many := make([][]byte, maxBatch+5)
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
			strings.Repeat(`{"n":1}`+"\n", maxBatch-1) + `{"n":1}`,
			strings.Repeat(`{"n":1}`+"\n", 4) + `{"n":1}`,
		}},
	}
	gw := &gateway{metrics: newMetrics(prometheus.NewRegistry())}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		c := &client{gw: gw, conn: conn, closeCode: 4009, closeText: "too slow"}
		for i, wr := range writes {
			last := i == len(writes)-1
			bp := c.frames(wr.q, last, []byte("p"), last)
			if _, err := conn.NetConn().Write(*bp); err != nil {
				return
			}
		}
		_, _, _ = conn.ReadMessage() // until the client goes
	}))
	defer srv.Close()
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pongs, pings := 0, 0
	conn.SetPongHandler(func(data string) error {
		if data != "p" {
			t.Errorf("pong payload %q", data)
		}
		pongs++
		return nil
	})
	conn.SetPingHandler(func(string) error { pings++; return nil })
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
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
	_, _, err = conn.ReadMessage()
	if !websocket.IsCloseError(err, 4009) {
		t.Fatalf("after the frames: %v, want close 4009", err)
	}
	if pongs != len(writes) || pings != 1 {
		t.Fatalf("%d pongs and %d pings, want %d and 1", pongs, pings, len(writes))
	}
}

// WRITE_DELAY holds back only busy sockets: the running average of the
// time between writes starts at a second, and falls below the delay only
// after a run of writes closer together than it.
func TestWriteGap(t *testing.T) {
	c := &client{}
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
