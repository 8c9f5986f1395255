package chaos

import (
	"net"
	"testing"
	"time"
)

// TestHeldPortResetsAndIsKept: a port held for a process that is down
// resets every connection at once (a client fails over as from a dead
// process) and cannot be taken by anyone else until released.
func TestHeldPortResetsAndIsKept(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	p := &Proc{Name: "held", ports: []string{addr}}
	p.hold(t)
	if len(p.held) != 1 {
		t.Fatal("port not held")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("a connection to a held port sent data, want it reset")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Error("a connection to a held port was left open, want it reset")
		}
		_ = c.Close()
	}
	if l, err := net.Listen("tcp", addr); err == nil {
		_ = l.Close()
		t.Error("another listener took a held port")
	}
	p.release()
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on a released port: %v", err)
	}
	_ = l.Close()
}
