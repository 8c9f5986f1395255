package bridge

import (
	"context"
	"sync"
	"time"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natsconn"
)

// socketCountTimeout bounds the question to presence about a user's
// sockets on other gateways.
const socketCountTimeout = 500 * time.Millisecond

// socketSlots counts, per user, the sockets this gateway has open or is
// opening, so that a user's handshakes arriving at once cannot pass the
// limit together.
type socketSlots struct {
	mu    sync.Mutex
	limit int
	n     map[string]int
}

func newSocketSlots(limit int) *socketSlots {
	return &socketSlots{limit: limit, n: map[string]int{}}
}

// take reserves a slot for one of user's sockets here; false when the
// user already has limit here.
func (s *socketSlots) take(user string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[user] >= s.limit {
		return false
	}
	s.n[user]++
	return true
}

// give returns a slot taken for user.
func (s *socketSlots) give(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[user]--; s.n[user] <= 0 {
		delete(s.n, user)
	}
}

// roomForSocket reserves a slot for a new socket of user, unless the user
// has SocketsPerUser open already: here (exact), or on all gateways
// together as presence counts them (asked only of users online, at most
// socketCountTimeout; without an answer this gateway's own count stands).
// Handshakes racing on different gateways can pass the limit by as many
// as are in flight at once. The caller gives the slot back when the
// socket ends or its handshake fails.
func (g *Gateway) roomForSocket(ctx context.Context, user string) bool {
	if !g.slots.take(user) {
		return false
	}
	if !g.hub.seesUser(user) {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, socketCountTimeout)
	defer cancel()
	var resp chat.PresenceUserResponse
	err := natsconn.RequestJSON(ctx, g.nc, chat.PresenceUserSubject, chat.PresenceUserRequest{ID: user}, &resp)
	if err == nil && resp.Sockets >= g.limits.SocketsPerUser {
		g.slots.give(user)
		return false
	}
	return true
}
