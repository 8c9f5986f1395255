package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
)

// Limits of the stream reads behind history and resume.
const (
	// readTimeout bounds one history answer or one replay.
	readTimeout = 10 * time.Second
	// replayBatch is how many messages one replay fetch asks for.
	replayBatch = 256
	// frameOverhead is what a delivery frame adds to the stored message
	// ("type", "seq"), counted generously, in bytes.
	frameOverhead = 64
)

// handleHistory answers one page of a conversation, oldest first: at
// most the limit asked for, and at most HistoryBytes of messages (a
// longer page is cut, with more). A request costs HistoryCost of the
// send rate (one was taken when the frame was read): each makes the
// gateway read the stream and build an answer of up to HistoryBytes.
func (g *Gateway) handleHistory(c *client, f chat.ClientFrame) {
	if e := g.checkConversation(c, f.ID, f.To); e != nil {
		c.reply(*e)
		return
	}
	subject := conversationSubject(c.user.ID, f.To)
	limit := f.Limit
	if limit == 0 {
		limit = chat.DefaultHistory
	}
	if limit < 1 || limit > chat.MaxHistory {
		c.reply(errorFrame(f.ID, chat.CodeBadLimit, fmt.Sprintf("limit must be 1 to %d", chat.MaxHistory)))
		return
	}
	if !c.charge(f.ID, "history") {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	// Walk back from "before": one direct get per message, each the last
	// of the conversation's subject below the previous one; finding one
	// more than the limit means there is more.
	msgs := []chat.MessageFrame{}
	more := false
	size := 0 // of the messages' frames: stored bytes plus type and seq
	for upTo := f.Before; upTo != 1; {
		data, seq, err := g.lastBefore(ctx, subject, upTo)
		if errors.Is(err, errNoMessage) {
			break
		}
		if err != nil {
			g.log.Warn("history read failed", "subject", subject, "err", err)
			c.reply(errorFrame(f.ID, chat.CodeUnavailable, "could not read the history; retry"))
			return
		}
		if len(msgs) == limit || (len(msgs) > 0 && size+len(data)+frameOverhead > g.limits.HistoryBytes) {
			more = true
			break
		}
		size += len(data) + frameOverhead
		if mf, err := messageFrame(data, seq); err != nil {
			g.log.Error("undecodable stored message", "seq", seq, "err", err)
		} else {
			msgs = append(msgs, mf)
		}
		upTo = seq
	}
	// Oldest first.
	for i, j := 0, len(msgs)-1; i < j; i, j = i+1, j-1 {
		msgs[i], msgs[j] = msgs[j], msgs[i]
	}
	c.reply(chat.HistoryFrame{Type: chat.FrameHistory, ID: f.ID, To: *f.To, Messages: msgs, More: more})
}

var errNoMessage = errors.New("no message")

// lastBefore is the last message on subject with a seq below before (0:
// the very last), through the stream's direct get.
func (g *Gateway) lastBefore(ctx context.Context, subject string, before uint64) ([]byte, uint64, error) {
	req := map[string]any{"multi_last": []string{subject}}
	if before > 0 {
		req["up_to_seq"] = before - 1
	}
	body, _ := json.Marshal(req)
	m, err := g.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+chat.StreamName, body)
	if err != nil {
		return nil, 0, err
	}
	switch st := m.Header.Get("Status"); st {
	case "":
	case "404":
		return nil, 0, errNoMessage
	default:
		return nil, 0, fmt.Errorf("direct get: status %s %s", st, m.Header.Get("Description"))
	}
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("direct get: sequence %q", m.Header.Get(jetstream.SequenceHeader))
	}
	return m.Data, seq, nil
}
