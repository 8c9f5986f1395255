package bridge

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natsconn"
)

// handleRead moves the user's read cursor of a conversation to the seq
// the client has shown, and tells every socket of the user, on every
// gateway, with what is left unread; in a direct conversation the other
// person's sockets are told how far it was read (seen). A cursor never
// moves back: a read at or behind it changes nothing and is not echoed.
func (g *Gateway) handleRead(c *client, f chat.ClientFrame) {
	if e := g.checkConversation(c, f.ID, f.To); e != nil {
		c.reply(*e)
		return
	}
	if f.Seq == 0 {
		c.reply(errorFrame(f.ID, chat.CodeMissingField, `read needs "seq": the last message shown`))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	// Only a conversation with messages has a cursor, and only up to its
	// latest: no cursor (or read receipt) for a conversation that never
	// was, and a cursor moves at most as many times as it has messages.
	last, err := g.stream.GetLastMsgForSubject(ctx, conversationSubject(c.user.ID, f.To))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		c.reply(errorFrame(f.ID, chat.CodeBadSeq, "this conversation has no message to read"))
		return
	case err != nil:
		c.reply(errorFrame(f.ID, chat.CodeUnavailable, "could not store the read cursor; retry"))
		return
	case f.Seq > last.Sequence:
		c.reply(errorFrame(f.ID, chat.CodeBadSeq, "seq is beyond the conversation's latest message"))
		return
	}
	// A read behind the latest message counts the rest with a consumer:
	// it costs what a history page does.
	if f.Seq < last.Sequence && !c.charge(f.ID, "read") {
		return
	}
	moved, err := g.moveReadCursor(ctx, c.user.ID, *f.To, f.Seq)
	if err != nil {
		g.log.Warn("read cursor not stored", "err", err)
		c.reply(errorFrame(f.ID, chat.CodeUnavailable, "could not store the read cursor; retry"))
		return
	}
	if moved {
		g.tellSeen(c.user.ID, *f.To, f.Seq)
	}
}

// tellSeen tells the other person of a direct conversation that reader's
// cursor moved to seq (a read receipt), whether a read or a send of the
// reader's moved it: either may land first, and the other then moves
// nothing.
func (g *Gateway) tellSeen(reader string, to chat.To, seq uint64) {
	if to.User != "" && to.User != reader {
		g.publishUser(to.User, chat.SeenFrame{Type: chat.FrameSeen, To: chat.To{User: reader}, Seq: seq})
	}
}

// moveReadCursor moves user's cursor of conversation to up to seq and, if
// it moved, tells every socket of the user, with what is left unread.
func (g *Gateway) moveReadCursor(ctx context.Context, user string, to chat.To, seq uint64) (bool, error) {
	at, unread, err := g.cursorAt(ctx, conversationSubject(user, &to), seq)
	if err != nil {
		return false, err
	}
	moved, err := g.cursors.advance(ctx, user, convKey(to), at)
	if moved {
		g.publishUser(user, chat.ReadFrame{Type: chat.FrameRead, To: to, Seq: seq, Unread: unread})
	}
	return moved, err
}

// cursorAt places a cursor at seq in subject's conversation: how many of
// its messages are stored up to seq, and how many after. Most reads are
// of the latest message, where the count is the subject's; a read further
// back counts the rest with a consumer starting after it.
func (g *Gateway) cursorAt(ctx context.Context, subject string, seq uint64) (cursor, uint64, error) {
	var at cursor
	var after uint64
	// Messages stored while counting would make the count at the cursor
	// too low: counted again until the subject holds still, a few times.
	for range cursorCounts {
		counts, err := g.subjectCounts(ctx, subject)
		if err != nil {
			return cursor{}, 0, err
		}
		total := counts[subject]
		last, err := g.stream.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && last.Sequence <= seq) {
			return cursor{Seq: seq, N: total}, 0, nil
		}
		if err != nil {
			return cursor{}, 0, err
		}
		if after, err = g.countAfter(ctx, subject, seq); err != nil {
			return cursor{}, 0, err
		}
		at = cursor{Seq: seq, N: total - min(after, total)}
		again, err := g.subjectCounts(ctx, subject)
		if err != nil || again[subject] == total {
			return at, after, err
		}
	}
	return at, after, nil
}

// cursorCounts bounds the counts of one cursor placement in a
// conversation that keeps changing.
const cursorCounts = 3

// countAfter counts subject's messages stored after seq, as a consumer
// starting there says.
func (g *Gateway) countAfter(ctx context.Context, subject string, seq uint64) (uint64, error) {
	cons, err := g.js.CreateConsumer(ctx, chat.StreamName, jetstream.ConsumerConfig{
		Name:              "count_" + newConnID(),
		FilterSubject:     subject,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       seq + 1,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: countConsumerIdle,
	})
	if err != nil {
		return 0, err
	}
	info := cons.CachedInfo()
	g.dropConsumer(info.Name)
	return info.NumPending, nil
}

// subjectCounts is how many messages the stream holds on each subject
// matching filter (a subject or a wildcard), from the stream's own index.
// The stream's info is asked for directly and decoded into the counts
// alone: jetstream's typed Info decodes the whole config and cluster
// state, and every handshake asks twice (in a connect storm, a sixth of
// the gateway's CPU).
func (g *Gateway) subjectCounts(ctx context.Context, filter string) (map[string]uint64, error) {
	counts := map[string]uint64{}
	for {
		var page streamSubjects
		req := map[string]any{"subjects_filter": filter, "offset": len(counts)}
		if err := natsconn.RequestJSON(ctx, g.nc, streamInfoSubject, req, &page); err != nil {
			return nil, err
		}
		if e := page.Error; e != nil {
			return nil, fmt.Errorf("stream info %s: %w: %d %s", filter, errStreamInfo, e.ErrCode, e.Description)
		}
		had := len(counts)
		maps.Copy(counts, page.State.Subjects)
		// A page that adds nothing (subjects sorting earlier came
		// meanwhile) would be asked for again and again: stop there.
		if len(counts) == had || len(counts) >= page.Total {
			return counts, nil
		}
	}
}

// errStreamInfo is the stream's refusal to give its info.
var errStreamInfo = errors.New("stream info refused")

// streamInfoSubject asks for the chat stream's info.
const streamInfoSubject = "$JS.API.STREAM.INFO." + chat.StreamName

// streamSubjects is the part of a stream info answer subjectCounts reads:
// one page of the subjects matching a filter, of total.
type streamSubjects struct {
	Error *jsAPIError `json:"error"`
	Total int         `json:"total"`
	State struct {
		Subjects map[string]uint64 `json:"subjects"`
	} `json:"state"`
}

// countConsumerIdle: a counting consumer whose delete was lost goes by
// itself after this.
const countConsumerIdle = 30 * time.Second

// publishUser sends frame to every socket of user, on every gateway
// (chat.UserEventsSubject). Core NATS: a frame published while the
// connection is down is lost, and a socket learns the state again from
// conversations on its next connect.
func (g *Gateway) publishUser(user string, frame any) {
	subject, err := chat.UserEventsSubject(user)
	if err != nil {
		return
	}
	if err := g.nc.Publish(subject, chat.Encode(frame)); err != nil {
		g.log.Warn("user event not published", "err", err)
	}
}
