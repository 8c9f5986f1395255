package bridge

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/services/chat"
)

// The stream's leader republishes each message it stores once, over core
// NATS, and a gateway's sockets see stored messages only that way. Some
// can never reach the gateway; the ways we know of (reasoned from
// nats-server's code, not reproduced):
//   - a leader that fails after its replicas stored a message but before
//     it applied (and so republished) it: the sender's retry is acked
//     from the next leader's dedupe window, and that leader, a replica
//     when it stored the message, never republishes it;
//   - a republish from a new leader that does not yet know of this
//     gateway's interest (its routes still coming up).
//
// Every republished message names the previous seq stored on its subject
// (Nats-Last-Sequence). When that is past the last one a subscription
// received on the subject, the messages between are read from the stream
// and dispatched before it: a socket then has them, in order within the
// conversation, without resuming (a resume would start after the highest
// seq the socket saw, past the gap). The fault suite's node-kill scenario
// once lost 4 acked messages on 41 sockets, most likely this way.
//
// A gap is only seen when the next message on its subject arrives: one
// in a conversation that goes quiet waits for the next message there,
// or for the page's history of the conversation. A gap that cannot be
// read yet (the stream electing a leader) is kept as a hole and read
// with the subject's next message: its messages then come after later
// ones of the conversation, late rather than lost.

// gapReadTimeout bounds the stream reads that fill one gap; the hub's
// dispatch waits for them.
const gapReadTimeout = 2 * time.Second

// maxGapRead bounds the messages read to fill one gap. A longer gap
// (which a NATS reconnect, not a lost republish, would make: its sockets
// resume from the stream instead) is filled up to it.
const maxGapRead = 256

// maxTrackedSubjects bounds the subjects one subscription is tracked on
// (a user's dm subscription has one per partner); past it, new subjects
// are not checked.
const maxTrackedSubjects = 4096

// gapPause is how long after a failed read gaps are not read (they are
// kept as holes, read with their subject's next message after it): the
// dispatcher waits for reads, and a stream that cannot answer (electing
// a leader) would hold every socket's live messages 2 s per gap.
const gapPause = 5 * time.Second

// liveSeqs is the last stored seq each hub subscription received, per
// subject. Only subscriptions tracked (from their creation until they
// end) are: a message still queued from one that ended adds nothing.
type liveSeqs struct {
	mu   sync.Mutex
	last map[*nats.Subscription]map[string]subjectSeqs
	// floor: a seq of the stream known when the subscription began; what
	// is stored up to it reaches a socket by resume or history, never by
	// a catch-up (see caughtUp).
	floor map[*nats.Subscription]uint64
}

// subjectSeqs is what a subscription received on one subject: the last
// seq, and the gaps that could not be read yet (holes), read again with
// the subject's next message once reads work, and delivered meanwhile if
// their messages come late.
type subjectSeqs struct {
	last  uint64
	holes []seqRange
}

// seqRange is the seqs from..to.
type seqRange struct{ from, to uint64 }

// maxHoles bounds the holes kept per subject; past it the oldest is
// given up (counted as unfilled).
const maxHoles = 8

// track starts tracking subs, which began when the stream's last seq was
// at least floor.
func (s *liveSeqs) track(floor uint64, subs ...*nats.Subscription) {
	s.mu.Lock()
	if s.last == nil {
		s.last = map[*nats.Subscription]map[string]subjectSeqs{}
		s.floor = map[*nats.Subscription]uint64{}
	}
	for _, sub := range subs {
		s.last[sub] = map[string]subjectSeqs{}
		s.floor[sub] = floor
	}
	s.mu.Unlock()
}

// forget stops tracking subs: they ended.
func (s *liveSeqs) forget(subs []*nats.Subscription) {
	s.mu.Lock()
	for _, sub := range subs {
		delete(s.last, sub)
		delete(s.floor, sub)
	}
	s.mu.Unlock()
}

// reset forgets what every subscription received: once every socket
// resumes from the stream (a catch-up that failed), what came before
// says nothing about what comes next.
func (s *liveSeqs) reset() {
	s.mu.Lock()
	for sub := range s.last {
		s.last[sub] = map[string]subjectSeqs{}
	}
	s.mu.Unlock()
}

// seen records seq, stored after prev on subject, as received by sub. It
// says whether seq was received already (a duplicate: not to deliver
// again), and returns the ranges to read: the holes still open, and the
// seqs between the last one received and seq if some were missed. The
// ranges are taken: the caller gives back what it could not read (hole).
func (s *liveSeqs) seen(sub *nats.Subscription, subject string, seq, prev uint64) (toRead []seqRange, dup bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	on := s.last[sub]
	if on == nil {
		return nil, false // not tracked
	}
	st, known := on[subject]
	if known && seq <= st.last {
		// A duplicate, unless it is a late message of a hole.
		if st.fillHole(seq) {
			on[subject] = st
			return nil, false
		}
		return nil, true
	}
	toRead, st.holes = st.holes, nil
	if known && prev > st.last {
		toRead = append(toRead, seqRange{st.last + 1, prev})
	}
	if known || len(on) < maxTrackedSubjects {
		st.last = seq
		on[subject] = st
	}
	return toRead, false
}

// caughtUp records seq, stored on subject, as read for sub by a catch-up
// (see catchup.go), and says whether sub had it already, or began after
// it was stored. A catch-up reads in seq order from before anything
// missed, so it opens no gap itself; the holes it fills are closed.
func (s *liveSeqs) caughtUp(sub *nats.Subscription, subject string, seq uint64) (had bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	on := s.last[sub]
	if on == nil {
		return false // not tracked
	}
	if seq <= s.floor[sub] {
		return true
	}
	st, known := on[subject]
	if known && seq <= st.last {
		if st.fillHole(seq) {
			on[subject] = st
			return false
		}
		return true
	}
	if known || len(on) < maxTrackedSubjects {
		st.last = seq
		on[subject] = st
	}
	return false
}

// fillHole takes seq out of the hole it is in, if any: a late message of
// a gap not read yet, to deliver.
func (st *subjectSeqs) fillHole(seq uint64) bool {
	for i, h := range st.holes {
		if seq >= h.from && seq <= h.to {
			st.holes = slices.Concat(st.holes[:i], splitRange(h, seq), st.holes[i+1:])
			return true
		}
	}
	return false
}

// splitRange is r without seq.
func splitRange(r seqRange, seq uint64) []seqRange {
	var out []seqRange
	if seq > r.from {
		out = append(out, seqRange{r.from, seq - 1})
	}
	if seq < r.to {
		out = append(out, seqRange{seq + 1, r.to})
	}
	return out
}

// hole gives back a range that could not be read; it reports whether an
// older hole was given up to make room.
func (s *liveSeqs) hole(sub *nats.Subscription, subject string, r seqRange) (dropped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.last[sub][subject]
	if !ok {
		return false
	}
	if len(st.holes) >= maxHoles {
		st.holes, dropped = st.holes[1:], true
	}
	st.holes = append(st.holes, r)
	s.last[sub][subject] = st
	return dropped
}

// fillGap checks m against what its subscription received on its
// subject. It returns the stored messages m's subscription missed before
// it, read from the stream (oldest first), and whether m itself is to be
// delivered (not a duplicate). Messages that are not stored ones
// (events) pass as they are. Only the dispatcher calls it.
func (h *hub) fillGap(m *nats.Msg) ([]*nats.Msg, bool) {
	if m.Sub == nil || m.Header == nil || h.readStored == nil {
		return nil, true
	}
	seq, err := strconv.ParseUint(m.Header.Get(chat.SequenceHeader), 10, 64)
	if err != nil {
		return nil, true
	}
	prev, err := strconv.ParseUint(m.Header.Get(chat.LastSequenceHeader), 10, 64)
	if err != nil {
		return nil, true
	}
	h.noteSeq(seq)
	subject := strings.TrimPrefix(m.Subject, chat.LivePrefix)
	toRead, dup := h.liveSeqs.seen(m.Sub, subject, seq, prev)
	if dup {
		return nil, false
	}
	var missed []*nats.Msg
	for _, r := range toRead {
		got, next := h.readGap(m.Sub, subject, r.from, r.to)
		missed = append(missed, got...)
		if next <= r.to && h.liveSeqs.hole(m.Sub, subject, seqRange{next, r.to}) && h.m != nil {
			h.m.gapsUnfilled.Inc()
		}
	}
	return missed, true
}

// readGap reads the messages stored on subject from seq from up to upTo,
// as sub would have received them, and says where it stopped (past upTo:
// all read). After a failed read it reads nothing for gapPause.
func (h *hub) readGap(sub *nats.Subscription, subject string, from, upTo uint64) ([]*nats.Msg, uint64) {
	if time.Now().Before(h.gapsPausedUntil) {
		return nil, from // read with the subject's next message
	}
	ctx, cancel := context.WithTimeout(context.Background(), gapReadTimeout)
	defer cancel()
	var missed []*nats.Msg
	next := from
	var err error
	for len(missed) < maxGapRead && next <= upTo {
		var sm storedMsg
		if sm, err = h.readStored(ctx, subject, next); err != nil {
			h.gapsPausedUntil = time.Now().Add(gapPause)
			break
		}
		if sm.seq == 0 || sm.seq > upTo {
			next = upTo + 1 // nothing more stored up to it (removed by the stream's limits)
			break
		}
		missed = append(missed, &nats.Msg{Subject: chat.LivePrefix + subject, Data: sm.data, Sub: sub,
			Header: nats.Header{chat.SequenceHeader: {strconv.FormatUint(sm.seq, 10)}}})
		next = sm.seq + 1
	}
	h.countGap(subject, from, upTo, len(missed), err)
	return missed, next
}

// countGap logs a gap and counts what was read of it.
func (h *hub) countGap(subject string, from, upTo uint64, read int, err error) {
	h.log.Warn("live messages missed; read from the stream", "subject", subject, "from", from, "to", upTo, "read", read, "err", err)
	if h.m == nil {
		return
	}
	h.m.gapReads.Add(float64(read))
	if err != nil {
		h.m.gapsUnfilled.Inc()
	}
}
