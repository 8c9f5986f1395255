package chaos

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// TestHeldPortIsRefusedAndKept: a port held for a process that is down
// refuses connections (as a dead process's port does) and cannot be
// taken by anyone else until released.
func TestHeldPortIsRefusedAndKept(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	fd, err := bindOnly(addr)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = c.Close()
		t.Error("a connection to a held port was accepted, want refused")
	}
	if l, err := net.Listen("tcp", addr); err == nil {
		_ = l.Close()
		t.Error("another listener took a held port")
	}
	_ = syscall.Close(fd)
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on a released port: %v", err)
	}
	_ = l.Close()
}
