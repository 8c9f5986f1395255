package chaos

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/natter/natter/services/chat"
)

// maxNotes bounds the oddities a ledger keeps to show.
const maxNotes = 20

// Ledger records, from the clients' side, every send, ack and delivery of
// a scenario, and counts what went wrong.
type Ledger struct {
	mu      sync.Mutex
	sends   map[sendKey]*sendRec
	bySeq   map[uint64]sendKey
	clients map[int]*clientRec
	users   map[string][]int // user id -> its clients' indexes

	ackLat, delivLat, recover []time.Duration
	slow                      []slowRecovery // the slowest few
	measure                   bool           // delivery latencies are recorded
	doubleStored              int            // a send acked with two different seqs
	refusals                  map[string]int
	notes                     []string
}

type sendKey struct{ user, id string }

type sendRec struct {
	to      chat.To
	at      time.Time
	seq     uint64 // 0 until acked
	ackAt   time.Time
	refused string
}

type clientRec struct {
	client   *Client
	user     string
	baseline uint64 // seq of its first hello: later messages are its to see
	hellos   int
	counts   map[uint64]int
	lastConv map[string]uint64 // highest seq seen per conversation
	ooo      int
	leaked   int
	meta     map[uint64]Delivery
}

// NewLedger is an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{
		sends: map[sendKey]*sendRec{}, bySeq: map[uint64]sendKey{}, clients: map[int]*clientRec{},
		users: map[string][]int{}, refusals: map[string]int{},
	}
}

// Add registers a client before it connects.
func (l *Ledger) Add(c *Client) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.clients[c.Index] = &clientRec{client: c, user: c.User.ID, counts: map[uint64]int{}, lastConv: map[string]uint64{}, meta: map[uint64]Delivery{}}
	l.users[c.User.ID] = append(l.users[c.User.ID], c.Index)
}

// Measure turns recording of delivery latencies on or off.
func (l *Ledger) Measure(on bool) {
	l.mu.Lock()
	l.measure = on
	l.mu.Unlock()
}

func (l *Ledger) hello(c *Client, seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.clients[c.Index]
	if r.hellos == 0 {
		r.baseline = seq
	}
	r.hellos++
}

func (l *Ledger) sending(user, id string, to chat.To, at time.Time) {
	l.mu.Lock()
	l.sends[sendKey{user, id}] = &sendRec{to: to, at: at}
	l.mu.Unlock()
}

func (l *Ledger) acked(user, id string, seq uint64, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.sends[sendKey{user, id}]
	if s == nil {
		l.noteLocked(fmt.Sprintf("ack of %s/%s that was never sent", user, id))
		return
	}
	switch {
	case s.seq == 0:
		s.seq, s.ackAt = seq, at
		l.ackLat = append(l.ackLat, at.Sub(s.at))
		if prev, dup := l.bySeq[seq]; dup {
			l.noteLocked(fmt.Sprintf("seq %d acked for %v and %s/%s", seq, prev, user, id))
		}
		l.bySeq[seq] = sendKey{user, id}
	case s.seq != seq:
		l.doubleStored++
		l.noteLocked(fmt.Sprintf("%s/%s acked with seq %d and %d: stored twice", user, id, s.seq, seq))
	}
}

func (l *Ledger) refused(user, id, code string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.sends[sendKey{user, id}]; s != nil {
		s.refused = code
	}
	l.refusals[code]++
}

// refusedOnce counts a refusal the client will retry.
func (l *Ledger) refusedOnce(code string) {
	l.mu.Lock()
	l.refusals[code]++
	l.mu.Unlock()
}

// Refusals is how many sends were refused, by error code (retried ones
// each time).
func (l *Ledger) Refusals() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for k, v := range l.refusals {
		out[k] = v
	}
	return out
}

// delivered records d reaching c; true if c had it already.
func (l *Ledger) delivered(c *Client, d Delivery, at time.Time) (again bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.clients[c.Index]
	r.counts[d.Seq]++
	if r.counts[d.Seq] > 1 {
		return true
	}
	r.meta[d.Seq] = d
	conv := conversation(d)
	if d.Seq < r.lastConv[conv] {
		r.ooo++
	}
	r.lastConv[conv] = max(r.lastConv[conv], d.Seq)
	if d.To.User != "" && r.user != d.From && r.user != d.To.User {
		r.leaked++
	}
	if l.measure {
		if sent, ok := stampOf(d.Text); ok {
			l.delivLat = append(l.delivLat, at.Sub(sent))
		}
	}
	return false
}

func (l *Ledger) recovered(d time.Duration) {
	l.mu.Lock()
	l.recover = append(l.recover, d)
	l.mu.Unlock()
}

// slowRecoveryAt is a recovery long enough to be noted with its history.
const slowRecoveryAt = 10 * time.Second

// slowRecovery is one such recovery and what the client went through.
type slowRecovery struct {
	d     time.Duration
	story string
}

// noteSlow keeps a slow recovery's story; the report shows the slowest.
func (l *Ledger) noteSlow(d time.Duration, s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.slow = append(l.slow, slowRecovery{d, s})
	slices.SortFunc(l.slow, func(a, b slowRecovery) int { return cmp.Compare(b.d, a.d) })
	l.slow = l.slow[:min(len(l.slow), 5)]
}

func (l *Ledger) note(s string) {
	l.mu.Lock()
	l.noteLocked(s)
	l.mu.Unlock()
}

func (l *Ledger) noteLocked(s string) {
	if len(l.notes) < maxNotes {
		l.notes = append(l.notes, s)
	}
}

// conversation names the conversation a message belongs to: its room, or
// the sorted pair of a direct message's users.
func conversation(d Delivery) string {
	if d.To.Room != "" {
		return "room:" + d.To.Room
	}
	a, b := d.From, d.To.User
	if a > b {
		a, b = b, a
	}
	return "dm:" + a + ":" + b
}

func stampOf(text string) (time.Time, bool) {
	s, _, _ := strings.Cut(strings.TrimPrefix(text, "t="), " ")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || !strings.HasPrefix(text, "t=") {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

// recipients are the clients that must see a message stored at seq: every
// client for a room (each joined before the load), both users' clients
// for a direct message.
func (l *Ledger) recipientsLocked(from string, to chat.To) []int {
	if to.Room != "" {
		out := make([]int, 0, len(l.clients))
		for i := range l.clients {
			out = append(out, i)
		}
		return out
	}
	out := slices.Clone(l.users[from])
	if to.User != from {
		out = append(out, l.users[to.User]...)
	}
	return out
}

// Missing is how many (acked message, recipient) deliveries have not
// happened yet, and how many sends await their ack.
func (l *Ledger) Missing() (deliveries, unacked int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, s := range l.sends {
		if s.refused != "" {
			continue
		}
		if s.seq == 0 {
			unacked++
			continue
		}
		for _, i := range l.recipientsLocked(k.user, s.to) {
			if r := l.clients[i]; s.seq > r.baseline && r.counts[s.seq] == 0 {
				deliveries++
			}
		}
	}
	return deliveries, unacked
}

// Acked is how many sends have been acknowledged.
func (l *Ledger) Acked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.bySeq)
}

// NewLedgerFor is a ledger of one client, index i of user u, for clients
// a scenario starts by themselves.
func NewLedgerFor(i int, u User) *Ledger {
	l := NewLedger()
	l.clients[i] = &clientRec{user: u.ID, counts: map[uint64]int{}, lastConv: map[string]uint64{}, meta: map[uint64]Delivery{}}
	l.users[u.ID] = []int{i}
	return l
}
