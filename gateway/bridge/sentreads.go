package bridge

import (
	"context"
	"sync"
	"time"

	"github.com/natter/natter/services/chat"
)

// sentReads moves a sender's read cursor to the messages they send:
// sending is reading, so a user's own messages, and what came before
// them, are not unread to them, whichever device or client (a page
// closed at once, a bot) sent them. The acks note the sends; one worker
// moves the cursors in the background, at most once a second, a user's
// sends to one conversation coalesced into one move, so a busy sender
// costs a few KV updates a second, and no send waits for it.
type sentReads struct {
	mu      sync.Mutex
	pending map[sentKey]uint64 // the highest seq sent, per user and conversation
	wake    chan struct{}      // (cap 1) pending is not empty
}

type sentKey struct {
	user string
	to   chat.To
}

func newSentReads() *sentReads {
	return &sentReads{pending: map[sentKey]uint64{}, wake: make(chan struct{}, 1)}
}

// note records that user's send to conversation to was stored at seq.
func (s *sentReads) note(user string, to chat.To, seq uint64) {
	s.mu.Lock()
	k := sentKey{user, to}
	s.pending[k] = max(s.pending[k], seq)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take empties pending.
func (s *sentReads) take() map[sentKey]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending
	s.pending = map[sentKey]uint64{}
	return p
}

// moveSentReads is the worker: until ctx ends it moves the noted cursors,
// at most once per sentReadEvery (a move behind the conversation's latest
// message counts the rest with a consumer: paced, a busy sender costs one
// a second at most), and tells every socket of each user whose cursor
// moved.
func (g *Gateway) moveSentReads(ctx context.Context) {
	for {
		select {
		case <-g.sentReads.wake:
		case <-ctx.Done():
			return
		}
		for k, seq := range g.sentReads.take() {
			mctx, cancel := context.WithTimeout(ctx, readTimeout)
			moved, err := g.moveReadCursor(mctx, k.user, k.to, seq)
			if err != nil && ctx.Err() == nil {
				g.log.Warn("sender's read cursor not moved", "err", err)
			}
			if moved {
				g.tellSeen(k.user, k.to, seq)
			}
			cancel()
		}
		select {
		case <-time.After(sentReadEvery):
		case <-ctx.Done():
			return
		}
	}
}

// sentReadEvery paces the worker: a user's sends to one conversation
// within it are one move.
const sentReadEvery = time.Second
