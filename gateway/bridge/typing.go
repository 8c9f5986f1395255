package bridge

import (
	"context"
	"time"

	"github.com/natter/natter/services/chat"
)

// handleTyping tells the other person of a direct conversation that the
// user is typing: core NATS (never stored), at most one per socket every
// chat.TypingInterval (more are dropped without a word: clients send on
// keystrokes), and only in a conversation that has messages. Typing in a room is not relayed yet: in the lobby every
// keystroke would reach every socket.
func (g *Gateway) handleTyping(c *client, f chat.ClientFrame) {
	if e := checkTo(f.ID, f.To); e != nil {
		c.reply(*e)
		return
	}
	if f.To.User == "" || f.To.User == c.user.ID {
		return
	}
	now := time.Now()
	if now.Sub(c.lastTyping) < chat.TypingInterval {
		return
	}
	// Only within a conversation that has messages: typing is not a way
	// to reach strangers.
	ctx, cancel := context.WithTimeout(context.Background(), typingCheckTimeout)
	defer cancel()
	if _, err := g.stream.GetLastMsgForSubject(ctx, conversationSubject(c.user.ID, f.To)); err != nil {
		return
	}
	c.lastTyping = now
	g.publishUser(f.To.User, chat.TypingFrame{Type: chat.FrameTyping, To: chat.To{User: c.user.ID}, User: c.user})
}

// typingCheckTimeout bounds the check that the conversation exists.
const typingCheckTimeout = 2 * time.Second
