package wsconn

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/natter/natter/services/poll"
)

// serveEnds serves sockets whose onMessage blocks on release when a
// message is "block", and reports each onEnd, checking that it comes
// once, after the socket ended, and after the last onMessage returned.
func serveEnds(t *testing.T, release <-chan struct{}) (*Server, string, <-chan int, *atomic.Int32) {
	t.Helper()
	s := NewServer(testOptions())
	codes := make(chan int, 64)
	var inMessage atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.Upgrade(w, r)
		if err != nil {
			return
		}
		var ended atomic.Bool
		c.Serve(func(data []byte, _ bool) {
			if ended.Load() {
				t.Error("a message handed over after onEnd")
			}
			if inMessage.Add(1) != 1 {
				t.Error("two messages handed over at once")
			}
			defer inMessage.Add(-1)
			if string(data) == "block" {
				c.Close(websocket.CloseGoingAway, "")
				<-release
			}
		}, func() {
			if ended.Swap(true) {
				t.Error("onEnd called twice")
			}
			if !isClosed(c.Done()) || inMessage.Load() != 0 {
				t.Error("onEnd before the socket ended, or while a message is handled")
			}
			codes <- c.CloseCode()
		})
	}))
	t.Cleanup(func() {
		hs.Close()
		s.Close()
	})
	return s, "ws" + strings.TrimPrefix(hs.URL, "http"), codes, &inMessage
}

// However a served socket ends, onEnd runs once, after the socket has
// ended and the last message was handled.
func TestServeEndsOnce(t *testing.T) {
	release := make(chan struct{})
	_, url, codes, inMessage := serveEnds(t, release)
	tests := []struct {
		name string
		end  func(c *websocket.Conn)
		want int
	}{
		{"client close frame", func(c *websocket.Conn) {
			_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		}, websocket.CloseNormalClosure},
		{"connection dropped", func(c *websocket.Conn) { _ = c.Close() }, websocket.CloseNormalClosure},
		{"oversize frame", func(c *websocket.Conn) {
			_ = c.WriteMessage(websocket.TextMessage, []byte(strings.Repeat("x", 5000)))
		}, websocket.CloseMessageTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, url)
			for range 3 {
				if err := c.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
					t.Fatal(err)
				}
			}
			tt.end(c)
			wantCode(t, codes, tt.want)
		})
	}
	// Closed (and ended) while a message is being handled: onEnd waits
	// for the handler.
	c := dial(t, url)
	if err := c.WriteMessage(websocket.TextMessage, []byte("block")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("client read %v, want close 1001", err)
	}
	poll.Until(t, 10*time.Second, func() error {
		if inMessage.Load() != 1 {
			return fmt.Errorf("the handler is not running")
		}
		return nil
	})
	select {
	case code := <-codes:
		t.Fatalf("onEnd (close %d) while the handler runs", code)
	default:
	}
	close(release)
	wantCode(t, codes, websocket.CloseGoingAway)
}

// A socket closed before it is served (a handshake refused late) still
// gets its onEnd.
func TestServeAfterEnd(t *testing.T) {
	s := NewServer(testOptions())
	defer s.Close()
	ended := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.Upgrade(w, r)
		if err != nil {
			return
		}
		c.Close(websocket.CloseTryAgainLater, "try again")
		<-c.Done()
		c.Serve(func([]byte, bool) { t.Error("a message after the end") }, func() { close(ended) })
	}))
	defer hs.Close()
	dial(t, "ws"+strings.TrimPrefix(hs.URL, "http"))
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("no onEnd for a socket that ended before Serve")
	}
}

// The pinger takes a socket for silent only when nothing of the client's
// waits unread: a pong the readiness loop has not handed over yet is not
// silence.
func TestSilentUnlessBytesWait(t *testing.T) {
	s := NewServer(testOptions())
	defer s.Close()
	got := make(chan *Conn, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := s.Upgrade(w, r); err == nil {
			got <- c // not served: nothing reads what comes
		}
	}))
	defer hs.Close()
	client := dial(t, "ws"+strings.TrimPrefix(hs.URL, "http"))
	c := <-got
	if c.silent() {
		t.Fatal("a socket just heard from is silent")
	}
	c.heardAt.Store(time.Now().Add(-time.Hour).UnixNano())
	if !c.silent() {
		t.Fatal("a socket heard from an hour ago, nothing waiting, is not silent")
	}
	if err := client.WriteControl(websocket.PongMessage, nil, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() error {
		if c.silent() {
			return fmt.Errorf("silent with a pong waiting")
		}
		return nil
	})
}
