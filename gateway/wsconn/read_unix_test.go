//go:build unix

package wsconn

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/natter/natter/services/poll"
)

// waiting says whether bytes wait unread in c's socket.
func waiting(c *Conn) bool {
	var n int
	_ = c.raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	})
	return n > 0
}

// A pong that reached the socket before the read deadline passed, but
// was not read by then, keeps the socket: the deadline is not silence.
func TestPongWaitingAtDeadline(t *testing.T) {
	opts := testOptions()
	s := NewServer(opts)
	defer s.Close()
	pongSent, codes := make(chan struct{}), make(chan int, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.Upgrade(w, r)
		if err != nil {
			return
		}
		// Last heard long ago, deadline passed, and a pong waiting unread.
		c.heardAt.Store(time.Now().Add(-time.Hour).UnixNano())
		_ = c.tcp.SetReadDeadline(time.Now().Add(-time.Second))
		<-pongSent
		poll.Until(t, 10*time.Second, func() error {
			if !waiting(c) {
				return fmt.Errorf("the pong is not in the socket yet")
			}
			return nil
		})
		for {
			data, _, err := c.Read()
			if err != nil {
				break
			}
			c.Send(data)
		}
		<-c.Done()
		codes <- c.CloseCode()
	}))
	defer hs.Close()
	c := dial(t, "ws"+strings.TrimPrefix(hs.URL, "http"))
	if err := c.WriteControl(websocket.PongMessage, nil, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	close(pongSent)
	if err := c.WriteMessage(websocket.TextMessage, []byte("alive")); err != nil {
		t.Fatal(err)
	}
	if got := readText(t, c); got != "alive" {
		t.Fatalf("echo %q", got)
	}
	select {
	case code := <-codes:
		t.Fatalf("socket closed with %d", code)
	default:
	}
}
