package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
)

// handleResume replays what the user missed after f.After, then goes live.
func (g *Gateway) handleResume(c *client, f chat.ClientFrame) {
	if f.After == nil {
		c.reply(errorFrame(f.ID, chat.CodeMissingField, `resume needs "after": the last seq seen`))
		c.goLive(0, stateHolding)
		return
	}
	if !c.beginResume() {
		c.reply(errorFrame(f.ID, chat.CodeResumeLate, "resume must be the first frame, sent at once after connecting"))
		return
	}
	after := *f.After
	last, complete, err := g.replay(c, after)
	if err != nil {
		g.log.Warn("replay failed", "user", c.user.ID, "err", err)
		c.reply(errorFrame(f.ID, chat.CodeUnavailable, "could not replay; reconnect and resume again"))
		c.conn.Close(websocket.CloseInternalServerErr, "replay failed")
		return
	}
	c.conn.SendWait(chat.Encode(chat.ResumedFrame{Type: chat.FrameResumed, Seq: last, Complete: complete}))
	c.goLive(last, stateReplaying)
}

// replay sends every stored message the user may see with a seq above
// after, in order, and returns the last seq sent (after if none).
//
// It reads through a consumer of its own (see replayConsumer), asked with
// requests that each have a deadline: a replay ends, with the messages or
// with an error (the socket is closed and the client resumes again), and
// never leaves the socket waiting with its live messages held.
func (g *Gateway) replay(c *client, after uint64) (uint64, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	info, err := g.stream.Info(ctx)
	if err != nil {
		return after, false, err
	}
	complete := after+1 >= info.State.FirstSeq || info.State.Msgs == 0
	if after >= info.State.LastSeq {
		return after, complete, nil
	}
	last := after
	sent := 0
	var cons jetstream.Consumer
	var delivered uint64  // the consumer's own sequence of the last message it gave
	var pending uint64    // messages the consumer still has for us
	known := false        // pending has been learned
	var stalled time.Time // since when the consumer has held them back
	defer func() {
		if cons != nil {
			g.dropConsumer(cons.CachedInfo().Name)
		}
	}()
	for {
		if cons == nil {
			if cons, err = g.replayConsumer(ctx, c.user.ID, last); err != nil {
				return last, false, err
			}
			delivered, pending, known = 0, 0, false
		}
		// FetchNoWait answers at once with what the consumer has; without
		// an answer its request ends within a second.
		batch, err := cons.FetchNoWait(replayBatch)
		if err != nil {
			return last, false, err
		}
		n := 0
		gap := false
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				return last, false, err
			}
			// Unacknowledged messages are not sent again: one lost on the
			// way (a request that ended before its answer arrived) is a
			// gap in the consumer's own sequence. The replay goes on from
			// the last message sent, with a new consumer.
			if meta.Sequence.Consumer != delivered+1 {
				gap = true
				break
			}
			n++
			delivered = meta.Sequence.Consumer
			pending, known = meta.NumPending, true
			if meta.Sequence.Stream <= last {
				continue
			}
			b, err := chat.MessageFrameBytes(m.Data(), meta.Sequence.Stream)
			if err != nil {
				g.log.Error("undecodable stored message", "seq", meta.Sequence.Stream, "err", err)
			} else if !c.conn.SendWait(b) {
				return last, false, errors.New("client gone during replay")
			}
			last = meta.Sequence.Stream
			sent++
		}
		if gap {
			g.dropConsumer(cons.CachedInfo().Name)
			cons = nil
			continue
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return last, false, err
		}
		if sent >= g.limits.MaxReplay && pending > 0 {
			return last, false, nil // the rest through history
		}
		if !known {
			// No message yet: the consumer's own count, from its creation.
			if info := cons.CachedInfo(); info != nil {
				pending, known = info.NumPending, true
			}
		}
		if n == 0 && pending > 0 {
			// The consumer has messages it did not hand over yet: a new
			// consumer on a node still catching up (seen right after a
			// NATS node failed) answers "none" for a moment. Ask again,
			// for at most replayStall: then the socket is closed and the
			// client resumes with a fresh consumer.
			if stalled.IsZero() {
				stalled = time.Now()
			} else if time.Since(stalled) > replayStall {
				return last, false, fmt.Errorf("replay: %d messages pending, none delivered for %s", pending, replayStall)
			}
			select {
			case <-ctx.Done():
				return last, false, fmt.Errorf("replay: %d messages pending: %w", pending, ctx.Err())
			case <-time.After(replayRetryWait):
			}
			continue
		}
		stalled = time.Time{}
		if n == 0 || pending == 0 {
			return last, complete, nil
		}
	}
}

// replayConsumer creates the consumer of one replay: the messages user
// may see with a seq above after, unacknowledged, in memory, on one
// node. The server places it on a node of the stream it believes alive;
// for a while after a node fails (until the cluster notices) that may be
// the failed node, where the consumer never starts and its creation is
// never answered. So each attempt waits at most consumerCreateWait, and
// the next one asks for a consumer of another name, placed afresh; the
// attempts end with ctx.
func (g *Gateway) replayConsumer(ctx context.Context, user string, after uint64) (jetstream.Consumer, error) {
	room, _ := chat.RoomSubject(chat.Lobby)
	cfg := jetstream.ConsumerConfig{
		FilterSubjects:    []string{room, "chat.dm." + user + ".*", "chat.dm.*." + user},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       after + 1,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: replayConsumerIdle,
	}
	for {
		cfg.Name = "replay_" + newConnID()
		attempt, cancel := context.WithTimeout(ctx, consumerCreateWait)
		cons, err := g.js.CreateConsumer(attempt, chat.StreamName, cfg)
		cancel()
		if err == nil {
			return cons, nil
		}
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		// Unanswered: the consumer may exist, on a node that is gone.
		g.dropConsumer(cfg.Name)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("replay consumer: %w", err)
		}
		g.log.Warn("replay consumer not created in time; trying another", "wait", consumerCreateWait.String())
	}
}

// dropConsumer deletes a replay's consumer in the background; one whose
// deletion fails ends after replayConsumerIdle without requests.
func (g *Gateway) dropConsumer(name string) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		defer cancel()
		_ = g.js.DeleteConsumer(ctx, chat.StreamName, name)
	}()
}

// Timing of a replay: replayRetryWait paces asking a consumer again for
// messages it says it has; replayStall bounds how long it may hold them
// back; consumerCreateWait bounds one attempt to create the consumer (a
// healthy cluster answers in milliseconds); a consumer left behind ends
// after replayConsumerIdle without requests.
const (
	replayRetryWait    = 50 * time.Millisecond
	replayStall        = 2 * time.Second
	consumerCreateWait = 2 * time.Second
	replayConsumerIdle = 30 * time.Second
)
