package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/natter/natter/services/chat"
)

// handleFrame decodes one client frame and acts on it; every refusal is an
// error frame and the socket stays open.
func (g *Gateway) handleFrame(c *client, data []byte) {
	f, ferr := decodeFrame(data)
	if ferr != nil {
		g.metrics.framesIn.WithLabelValues("invalid").Inc()
		c.reply(*ferr)
		return
	}
	g.metrics.framesIn.WithLabelValues(f.Type).Inc()
	first := !c.started
	c.started = true
	if f.Type == chat.FrameResume {
		if first {
			g.handleResume(c, f)
		} else {
			c.reply(errorFrame(f.ID, chat.CodeResumeLate, "resume must be the first frame"))
		}
		return
	}
	if first {
		c.goLive(0, stateHolding) // not resuming: no need to hold live messages
	}
	switch f.Type {
	case chat.FrameSend:
		g.handleSend(c, f)
	case chat.FrameHistory:
		g.handleHistory(c, f)
	case chat.FrameRead:
		g.handleRead(c, f)
	case chat.FrameConversations:
		g.handleConversations(c, f)
	case chat.FrameTyping:
		g.handleTyping(c, f)
	case chat.FrameRoomCreate:
		g.handleRoomCreate(c, f)
	case chat.FrameRooms:
		g.handleRooms(c, f)
	case chat.FrameJoin:
		g.handleJoin(c, f)
	case chat.FrameLeave:
		g.handleLeave(c, f)
	case chat.FrameInvite:
		g.handleInvite(c, f)
	case chat.FrameMembers:
		g.handleMembers(c, f)
	case chat.FrameOnline:
		g.handleOnline(c, f)
	}
}

// decodeFrame parses a client frame and checks its type is known.
func decodeFrame(data []byte) (chat.ClientFrame, *chat.ErrorFrame) {
	var f chat.ClientFrame
	if err := json.Unmarshal(data, &f); err != nil {
		// A field of the wrong type leaves the others decoded: the id, when
		// it was a string, says which frame failed.
		e := errorFrame(f.ID, chat.CodeBadFrame, "not a JSON object of the protocol: "+jsonProblem(err))
		return f, &e
	}
	switch f.Type {
	case chat.FrameSend, chat.FrameHistory, chat.FrameResume, chat.FrameRead, chat.FrameConversations, chat.FrameTyping,
		chat.FrameRoomCreate, chat.FrameRooms, chat.FrameJoin, chat.FrameLeave, chat.FrameInvite, chat.FrameMembers, chat.FrameOnline:
		return f, nil
	case "":
		e := errorFrame(f.ID, chat.CodeMissingField, `every frame needs a "type"`)
		return f, &e
	default:
		e := errorFrame(f.ID, chat.CodeUnknownType, fmt.Sprintf("unknown frame type %q", f.Type))
		return f, &e
	}
}

func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Sprintf("field %q must be a %s", te.Field, te.Type)
	}
	return "invalid JSON"
}

// checkSend checks a send's shape: id, recipient, text. Whether a user
// recipient exists is destination's business.
func checkSend(f chat.ClientFrame, maxText int) *chat.ErrorFrame {
	switch {
	case f.ID == "":
		return refusal("", chat.CodeMissingField, `send needs an "id"`)
	case chat.ValidID(f.ID) != nil:
		return refusal(f.ID, chat.CodeBadID, "message id: "+chat.ValidID(f.ID).Error()) // echoed, so the client can tell which send
	}
	if e := checkTo(f.ID, f.To); e != nil {
		return e
	}
	if strings.TrimFunc(f.Text, unicode.IsSpace) == "" {
		return refusal(f.ID, chat.CodeEmptyText, "text is empty")
	}
	if n := utf8.RuneCountInString(f.Text); n > maxText {
		return refusal(f.ID, chat.CodeTextTooLong, fmt.Sprintf("text has %d characters; the limit is %d", n, maxText))
	}
	return nil
}

// checkTo checks a conversation's "to" (of a send or a history request)
// names exactly one of a room and a valid user id; whether the user is in
// the room is the gateway's to say (checkConversation).
func checkTo(id string, to *chat.To) *chat.ErrorFrame {
	switch {
	case to == nil:
		return refusal(id, chat.CodeMissingField, `"to" is required: {"room": ...} or {"user": ...}`)
	case (to.Room == "") == (to.User == ""):
		return refusal(id, chat.CodeBadRecipient, `"to" names exactly one of "room" and "user"`)
	case to.User != "" && chat.ValidID(to.User) != nil:
		return refusal(id, chat.CodeBadID, "recipient: "+chat.ValidID(to.User).Error())
	case to.Room != "" && chat.ValidID(to.Room) != nil:
		return unknownRoom(id, to.Room)
	}
	return nil
}

// checkConversation checks a "to" as checkTo does, and that a room it
// names is one c's user is in.
func (g *Gateway) checkConversation(c *client, id string, to *chat.To) *chat.ErrorFrame {
	if e := checkTo(id, to); e != nil {
		return e
	}
	if to.Room != "" && !g.hub.isMember(c.user.ID, to.Room) {
		return unknownRoom(id, to.Room)
	}
	return nil
}

// unknownRoom refuses a room the user is not in, the same whether or not
// it exists: a private room one was not invited to is no room to them.
func unknownRoom(id, room string) *chat.ErrorFrame {
	if len(room) > chat.MaxIDLen {
		room = room[:chat.MaxIDLen] + "…"
	}
	return refusal(id, chat.CodeUnknownRoom, fmt.Sprintf("no room %q here", room))
}

// conversationSubject is the subject of user's conversation to, which
// checkTo accepted: the room's, or the direct one with to.User.
func conversationSubject(user string, to *chat.To) string {
	var s string
	if to.Room != "" {
		s, _ = chat.RoomSubject(to.Room)
	} else {
		s, _ = chat.DMSubject(user, to.User)
	}
	return s
}

func refusal(id, code, message string) *chat.ErrorFrame {
	e := errorFrame(id, code, message)
	return &e
}
