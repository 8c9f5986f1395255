package bridge

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/services/chat"
)

// handleTyping tells the conversation's other members that the user is
// typing: core NATS (never stored), at most one per socket every
// chat.TypingInterval (more are dropped without a word: clients send on
// keystrokes). In a direct conversation, only one that has messages
// (typing is not a way to reach strangers); in a room, only one the user
// is in with at most TypingRoomMax members; in the lobby, never: there
// every keystroke would reach everyone.
func (g *Gateway) handleTyping(c *client, f chat.ClientFrame) {
	if e := g.checkConversation(c, f.ID, f.To); e != nil {
		c.reply(*e)
		return
	}
	if f.To.Room == chat.Lobby || f.To.User == c.user.ID {
		return
	}
	now := time.Now()
	if now.Sub(c.lastTyping) < chat.TypingInterval {
		return
	}
	if f.To.Room != "" {
		if r, ok := g.roomDir.get(f.To.Room); !ok || r.Members > g.limits.TypingRoomMax {
			return
		}
		c.lastTyping = now
		g.publishRoom(f.To.Room, c.user.ID, chat.TypingFrame{Type: chat.FrameTyping, To: *f.To, User: c.user})
		return
	}
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

// publishRoom tells every socket of room's members, on every gateway,
// frame: core NATS, never stored; actor's own sockets are skipped.
func (g *Gateway) publishRoom(room, actor string, frame any) {
	subject, err := chat.RoomEventsSubject(room)
	if err != nil {
		return
	}
	m := &nats.Msg{Subject: subject, Data: chat.Encode(frame), Header: nats.Header{}}
	m.Header.Set(chat.ActorHeader, actor)
	if err := g.nc.PublishMsg(m); err != nil {
		g.log.Warn("room event not published", "room", room, "err", err)
	}
}
