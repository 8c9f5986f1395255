package wsconn

import (
	"sync"
	"time"
)

// pinger pings every socket once a PingInterval from one goroutine,
// rather than a timer per socket (its memory, and a goroutine started
// for each of its ticks): the sockets are spread over pingSlots slots,
// visited in turn, one every PingInterval/pingSlots of wall time (a late
// tick visits the slots it missed). A new socket joins the slot visited
// last, so its first ping comes about a PingInterval after the upgrade.
type pinger struct {
	mu      sync.Mutex
	slots   [pingSlots][]*Conn
	visited int // slots visited since start
	stop    chan struct{}
	done    chan struct{}
}

// pingSlots is how many groups the sockets are pinged in.
const pingSlots = 64

func newPinger(interval time.Duration) *pinger {
	p := &pinger{stop: make(chan struct{}), done: make(chan struct{})}
	go p.run(max(interval/pingSlots, time.Microsecond))
	return p
}

// close stops the visits.
func (p *pinger) close() {
	close(p.stop)
	<-p.done
}

// add puts c in the slot visited last.
func (p *pinger) add(c *Conn) {
	p.mu.Lock()
	slot := (p.visited + pingSlots - 1) % pingSlots
	c.pingSlot, c.pingIndex = int32(slot), int32(len(p.slots[slot]))
	p.slots[slot] = append(p.slots[slot], c)
	p.mu.Unlock()
}

// remove takes c out of its slot, moving the slot's last socket into its
// place.
func (p *pinger) remove(c *Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.slots[c.pingSlot]
	if int(c.pingIndex) >= len(s) || s[c.pingIndex] != c {
		return // never added, or removed already
	}
	last := s[len(s)-1]
	s[c.pingIndex], last.pingIndex = last, c.pingIndex
	s[len(s)-1] = nil
	p.slots[c.pingSlot] = s[:len(s)-1]
}

func (p *pinger) run(slot time.Duration) {
	defer close(p.done)
	t := time.NewTicker(slot)
	defer t.Stop()
	start := time.Now()
	var due []*Conn
	var l Lineup
	for {
		select {
		case <-t.C:
		case <-p.stop:
			return
		}
		for p.visit(int(time.Since(start)/slot), &due) {
			for _, c := range due {
				c.ping(&l)
			}
			l.Flush()
			clear(due)
		}
	}
}

// visit takes the next slot's sockets into due, if it is due (upTo slots
// should have been visited by now); false once none is.
func (p *pinger) visit(upTo int, due *[]*Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.visited >= upTo {
		return false
	}
	*due = append((*due)[:0], p.slots[p.visited%pingSlots]...)
	p.visited++
	return true
}
