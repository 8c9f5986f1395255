package natsconn_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/poll"
)

// A server that goes silent with the connection left open (here: a
// loopback relay that stops passing bytes, as a cut-off node does) is
// left for another within a few periods; nats.go's own pings would take
// minutes.
func TestWatchdogLeavesASilentServer(t *testing.T) {
	ns := natstest.Start(t)
	relay := natstest.StartRelay(t, ns.URL())
	nc, err := nats.Connect(relay.URL()+","+ns.URL(), nats.DontRandomize(), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if got := nc.ConnectedAddr(); got != relay.Addr() {
		t.Fatalf("connected to %s, want the relay %s first", got, relay.Addr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go natsconn.Watchdog(ctx, nc, 100*time.Millisecond, 3, slog.New(slog.NewTextHandler(io.Discard, nil)))
	relay.Freeze()
	poll.Until(t, 10*time.Second, func() error {
		if got := nc.ConnectedAddr(); !nc.IsConnected() || got == relay.Addr() {
			return fmt.Errorf("on %s (connected %v)", got, nc.IsConnected())
		}
		return nil
	})
	if err := nc.FlushTimeout(time.Second); err != nil {
		t.Fatalf("on the other server: %v", err)
	}
}

// A forced reconnect (the watchdog's) is a disconnect like any other for
// OnDisconnect, though nats.go reports it without an error; a Close is
// not.
func TestOnDisconnectOnForcedReconnect(t *testing.T) {
	ns := natstest.Start(t)
	nc, err := natsconn.Connect(ns.URL(), "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	calls := 0
	natsconn.OnDisconnect(nc, func() { mu.Lock(); calls++; mu.Unlock() })
	count := func() int { mu.Lock(); defer mu.Unlock(); return calls }
	poll.Until(t, 10*time.Second, func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("not connected")
		}
		return nil
	})
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() error {
		if count() != 1 {
			return fmt.Errorf("OnDisconnect called %d times after a forced reconnect, want 1", count())
		}
		return nil
	})
	poll.Until(t, 10*time.Second, func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("not reconnected")
		}
		return nil
	})
	// nats.go runs its callbacks in order: once the closed one ran, a
	// disconnect callback for the Close would have too.
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	nc.Close()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("no closed callback")
	}
	if n := count(); n != 1 {
		t.Fatalf("OnDisconnect called %d times after Close, want still 1", n)
	}
}
