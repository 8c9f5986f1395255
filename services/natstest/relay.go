package natstest

import (
	"net"
	"strings"
	"sync"
	"testing"
)

// Relay passes bytes between loopback clients and a server, so a test can
// break one client's link to the server as a failing network does, the
// server and the other clients unaffected: Freeze keeps the connections
// open and passes nothing (a node cut off, a paused process), Cut closes
// them and refuses new ones (a node gone) until Restore.
type Relay struct {
	addr   string
	server string
	mu     sync.Mutex
	thawed chan struct{} // closed while bytes pass
	cut    bool
	conns  []net.Conn
	linked int // connections relayed so far
	done   chan struct{}
}

// StartRelay relays a loopback port to the server at url (nats://host:port
// or host:port) until the test ends.
func StartRelay(t testing.TB, url string) *Relay {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{addr: l.Addr().String(), server: strings.TrimPrefix(url, "nats://"), thawed: make(chan struct{}), done: make(chan struct{})}
	close(r.thawed)
	t.Cleanup(func() {
		close(r.done)
		_ = l.Close()
		r.closeConns()
	})
	go r.accept(l)
	return r
}

// Addr is the relay's host:port; URL, as a NATS URL.
func (r *Relay) Addr() string { return r.addr }
func (r *Relay) URL() string  { return "nats://" + r.addr }

// Freeze stops passing bytes, the connections left open.
func (r *Relay) Freeze() {
	r.mu.Lock()
	r.thawed = make(chan struct{})
	r.mu.Unlock()
}

// Cut closes every relayed connection and refuses new ones.
func (r *Relay) Cut() {
	r.mu.Lock()
	r.cut = true
	r.mu.Unlock()
	r.closeConns()
}

// Linked is how many connections the relay has passed on so far: one
// more after a Cut means the client is back.
func (r *Relay) Linked() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.linked
}

// Restore undoes Cut and Freeze.
func (r *Relay) Restore() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cut = false
	select {
	case <-r.thawed:
	default:
		close(r.thawed)
	}
}

func (r *Relay) accept(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", r.server)
		if err != nil {
			_ = c.Close()
			continue
		}
		r.mu.Lock()
		cut := r.cut
		if !cut {
			r.conns = append(r.conns, c, s)
			r.linked++
		}
		r.mu.Unlock()
		if cut {
			_ = c.Close()
			_ = s.Close()
			continue
		}
		go r.pass(c, s)
		go r.pass(s, c)
	}
}

func (r *Relay) closeConns() {
	r.mu.Lock()
	conns := r.conns
	r.conns = nil
	r.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

func (r *Relay) gate() chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.thawed
}

// pass copies from src to dst while thawed; a closed end closes the other.
func (r *Relay) pass(src, dst net.Conn) {
	defer func() { _ = dst.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		select {
		case <-r.gate():
		case <-r.done:
			return
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}
