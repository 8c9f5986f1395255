package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
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
	r := &replayRun{g: g, ctx: ctx, who: c.user.ID, limit: g.limits.MaxReplay,
		filters: func() []string { return replayFilters(c.user.ID, g.hub.roomsOf(c.user.ID)) },
		emit: func(_ string, data []byte, seq uint64) error {
			b, err := chat.MessageFrameBytes(data, seq)
			if err != nil {
				g.log.Error("undecodable stored message", "seq", seq, "err", err)
				return nil
			}
			if !c.conn.SendWait(b) {
				return errors.New("client gone during replay")
			}
			return nil
		}}
	last, complete, cut, err := r.run(after)
	return last, complete && !cut, err
}

// run reads every stored message on the run's filters with a seq above
// after, up to the stream's last seq when it began, and emits them in
// order. It returns the last seq emitted, whether the stream still held
// everything above after (complete), and whether it stopped at the run's
// limit with more to read (cut).
func (r *replayRun) run(after uint64) (last uint64, complete, cut bool, err error) {
	info, err := leaderInfo(r.ctx, r.g.stream)
	if err != nil {
		return after, false, false, err
	}
	complete = after+1 >= info.State.FirstSeq || info.State.Msgs == 0
	if after >= info.State.LastSeq {
		return after, complete, false, nil
	}
	r.last, r.upTo = after, info.State.LastSeq
	defer r.dropConsumer()
	for {
		state, err := r.round()
		switch {
		case err == nil && state == replayDone:
			// The consumer may sit on a replica still catching up: what
			// the stream's leader held when the run began must have
			// been read, or the run goes on.
			var missed bool
			if missed, err = r.g.missed(r.ctx, r.filters(), r.last, r.upTo); err == nil && !missed {
				return r.last, complete, false, nil
			}
			if err == nil {
				r.dropConsumer()
				err = r.waitStalled()
			}
		case state == replayCut:
			return r.last, complete, true, nil
		}
		if err != nil {
			return r.last, complete, false, err
		}
	}
}

// leaderInfo is the stream's state as its leader has it. While a
// replicated stream has no leader (an election, after its leader's node
// failed or was paused) any replica answers with its own state, which
// may lack messages already acknowledged: a replay up to that state's
// last seq, then live, lost such a message for every socket that
// resumed then (chaos scenario 3, 43 sockets). So it asks again, paced,
// until a leader answers or ctx ends. A request that fails (no responders
// while the gateway's NATS node is back but its JetStream is not yet, a
// timeout) is asked again too: failing the replay closed the socket and
// left the client to its backoff.
func leaderInfo(ctx context.Context, stream jetstream.Stream) (*jetstream.StreamInfo, error) {
	for {
		info, err := streamInfo(ctx, stream)
		if err == nil && (info.Cluster == nil || info.Cluster.Leader != "" || info.Config.Replicas <= 1) {
			return info, nil
		}
		if err == nil {
			err = fmt.Errorf("stream %s has no leader", info.Config.Name)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-time.After(replayRetryWait):
		}
	}
}

// infoTimeout bounds one stream info request. One sent just before the
// stream's leader failed gets no answer at all: without its own bound it
// would use up its caller's whole deadline (10 s) rather than be asked
// again of the next leader.
const infoTimeout = 2 * time.Second

// streamInfo is one stream info request, bounded by infoTimeout.
func streamInfo(ctx context.Context, stream jetstream.Stream) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, infoTimeout)
	defer cancel()
	return stream.Info(ctx)
}

// missed says whether the stream's leader holds a message on filters
// with a seq in (last, upTo]. A replay consumer on a replica still
// catching up (right after a NATS node failed) can report nothing
// pending while the leader has more; a stored message asked of the
// leader (not a direct get, which any replica answers) cannot.
func (g *Gateway) missed(ctx context.Context, filters []string, last, upTo uint64) (bool, error) {
	if last >= upTo {
		return false, nil
	}
	// One question per filter (a user in many rooms has many), a few at
	// a time; any message found ends the rest.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	found := make([]bool, len(filters))
	errs := make([]error, len(filters))
	sem := make(chan struct{}, conversationReads)
	var wg sync.WaitGroup
	for i, filter := range filters {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			seq, err := g.nextStored(ctx, filter, last+1)
			found[i], errs[i] = seq != 0 && seq <= upTo, err
			if found[i] {
				cancel()
			}
		})
	}
	wg.Wait()
	if slices.Contains(found, true) {
		return true, nil
	}
	return false, errors.Join(errs...)
}

// nextStored is the seq of the first message on filter at or after from,
// as the stream's leader has it (0: none).
func (g *Gateway) nextStored(ctx context.Context, filter string, from uint64) (uint64, error) {
	m, err := g.storedAt(ctx, filter, from)
	return m.seq, err
}

// storedMsg is a stored message as a message get returns it (seq 0: none).
type storedMsg struct {
	subject string
	seq     uint64
	data    []byte
}

// storedAt is the first message on filter at or after from, asked of the
// stream's leader: it answers as long as the stream has a leader, with
// no JetStream meta leader needed (unlike a consumer's creation).
func (g *Gateway) storedAt(ctx context.Context, filter string, from uint64) (storedMsg, error) {
	req, _ := json.Marshal(map[string]any{"seq": from, "next_by_subj": filter})
	var resp struct {
		Message *struct {
			Subject string `json:"subject"`
			Seq     uint64 `json:"seq"`
			Data    []byte `json:"data"` // base64 in the answer
		} `json:"message"`
		Error *jsAPIError `json:"error"`
	}
	for {
		m, err := g.askLeader(ctx, "$JS.API.STREAM.MSG.GET."+chat.StreamName, req)
		if err != nil {
			return storedMsg{}, fmt.Errorf("message get: %w", err)
		}
		resp.Message, resp.Error = nil, nil
		if err := json.Unmarshal(m.Data, &resp); err != nil {
			return storedMsg{}, fmt.Errorf("message get: %w", err)
		}
		// "Temporarily unavailable" (the JetStream meta group electing a
		// leader after a node failed; the fault suite's partition) is
		// asked again, paced, until ctx ends.
		if resp.Error == nil || resp.Error.ErrCode != errCodeNotAvailable {
			break
		}
		select {
		case <-ctx.Done():
			return storedMsg{}, fmt.Errorf("message get: %s (%w)", resp.Error.Description, ctx.Err())
		case <-time.After(replayRetryWait):
		}
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == errCodeNoMessage:
		return storedMsg{}, nil
	case resp.Error != nil:
		return storedMsg{}, fmt.Errorf("message get: %s", resp.Error.Description)
	case resp.Message == nil || resp.Message.Seq == 0:
		return storedMsg{}, errors.New("message get: empty answer")
	}
	return storedMsg{subject: resp.Message.Subject, seq: resp.Message.Seq, data: resp.Message.Data}, nil
}

// jsAPIError is the error part of a JetStream API answer.
type jsAPIError struct {
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

// askLeader sends a request the stream's leader answers, each try
// bounded by infoTimeout (one sent as the leader failed is never
// answered) and tried again, paced, until ctx ends.
func (g *Gateway) askLeader(ctx context.Context, subject string, req []byte) (*nats.Msg, error) {
	for {
		tctx, cancel := context.WithTimeout(ctx, infoTimeout)
		m, err := g.nc.RequestWithContext(tctx, subject, req)
		cancel()
		if err == nil || ctx.Err() != nil {
			return m, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(replayRetryWait):
		}
	}
}

// JetStream API error codes: "no message found", and "JetStream system
// temporarily unavailable".
const (
	errCodeNoMessage    = 10037
	errCodeNotAvailable = 10008
)

// replayFilters are the stored subjects of everything user may see: the
// lobby, the other rooms they are in, and their direct conversations on
// either side.
func replayFilters(user string, rooms []string) []string {
	lobby, _ := chat.RoomSubject(chat.Lobby)
	filters := []string{lobby, "chat.dm." + user + ".*", "chat.dm.*." + user}
	for _, r := range rooms {
		if s, err := chat.RoomSubject(r); err == nil {
			filters = append(filters, s)
		}
	}
	return filters
}

// replayRun is one read of the stream under way (a socket's replay, or
// the hub's catch-up after a NATS reconnect): its consumer and how far it
// got.
type replayRun struct {
	g       *Gateway
	ctx     context.Context
	who     string          // whose read, for the logs
	filters func() []string // the subjects read (read again each round: rooms change)
	emit    func(subject string, data []byte, seq uint64) error
	limit   int // messages emitted at most, then cut

	cons      jetstream.Consumer
	last      uint64    // the last seq emitted
	sent      int       // messages emitted
	delivered uint64    // the consumer's own sequence of the last message it gave
	pending   uint64    // messages the consumer still has for us
	known     bool      // pending has been learned
	stalled   time.Time // since when the consumer has held them back
	// byGet: the run reads message by message from the stream's leader
	// (see roundByGet), after a consumer could not be had; next is then
	// the next message of each filter above last, as read, and upTo the
	// stream's last seq when the run began.
	byGet bool
	next  map[string]storedMsg
	upTo  uint64
}

// What a replay round leaves to do.
type replayState int

const (
	replayMore replayState = iota // another round
	replayCut                     // the run's limit sent, more pending
	replayDone                    // everything sent
)

// round sends one batch of the consumer's messages, starting a consumer
// from the last message sent if there is none.
func (r *replayRun) round() (replayState, error) {
	if r.byGet {
		return r.roundByGet()
	}
	if r.cons == nil {
		cons, err := r.g.replayConsumer(r.ctx, r.filters(), r.last)
		if err != nil {
			// No consumer now (no meta leader, for 4-9 s after its
			// node fails): the stream's leader alone can replay.
			r.g.log.Warn("replay consumer not created; replaying by message gets", "for", r.who, "err", err)
			r.byGet = true
			return r.roundByGet()
		}
		r.cons, r.delivered, r.pending, r.known = cons, 0, 0, false
	}
	n, gap, err := r.fetch()
	var emitErr emitError
	switch {
	case errors.As(err, &emitErr) || (err != nil && r.ctx.Err() != nil):
		return replayMore, err
	case err != nil:
		// The consumer is gone (its node failed; the fault suite's node
		// kills answered "no responders"): the stream's leader can still
		// be read.
		r.g.log.Warn("replay consumer failed; replaying by message gets", "for", r.who, "err", err)
		r.dropConsumer()
		r.byGet = true
		return replayMore, nil
	case gap:
		r.dropConsumer()
		return replayMore, nil
	case r.sent >= r.limit && r.pending > 0:
		return replayCut, nil
	}
	if !r.known {
		// No message yet: the consumer's own count, from its creation.
		if info := r.cons.CachedInfo(); info != nil {
			r.pending, r.known = info.NumPending, true
		}
	}
	if n == 0 && r.pending > 0 {
		return replayMore, r.waitStalled()
	}
	r.stalled = time.Time{}
	if n == 0 || r.pending == 0 {
		return replayDone, nil
	}
	return replayMore, nil
}

// roundByGet sends up to replayBatch messages, each asked of the stream's
// leader (storedAt) as the first above the last sent on one of the
// user's filters, lowest seq first: one request per message, with no
// consumer and so no JetStream meta leader needed.
//
// It replays up to upTo only, what was stored when the replay began;
// later messages come live. A filter's answer is kept until its message
// is sent, so past upTo it could be stale: a filter found empty, then a
// message stored on it, then a later one on another filter replayed,
// would put the first below the last seq sent, and going live would
// drop it as replayed (seen in chaos scenario 2: direct messages lost).
func (r *replayRun) roundByGet() (replayState, error) {
	if r.next == nil {
		r.next = map[string]storedMsg{}
	}
	filters := r.filters()
	for range replayBatch {
		var low storedMsg
		for _, f := range filters {
			m, ok := r.next[f]
			if !ok || (m.seq != 0 && m.seq <= r.last) {
				var err error
				if m, err = r.g.storedAt(r.ctx, f, r.last+1); err != nil {
					return replayMore, err
				}
				r.next[f] = m
			}
			if m.seq != 0 && m.seq <= r.upTo && (low.seq == 0 || m.seq < low.seq) {
				low = m
			}
		}
		switch {
		case low.seq == 0:
			return replayDone, nil
		case r.sent >= r.limit:
			return replayCut, nil
		}
		if err := r.send(low.subject, low.data, low.seq); err != nil {
			return replayMore, err
		}
	}
	return replayMore, nil
}

// fetch takes what the consumer has at once (FetchNoWait; without an
// answer its request ends within a second) and sends it. Unacknowledged
// messages are not sent again: one lost on the way (a request that ended
// before its answer arrived) is a gap in the consumer's own sequence,
// and the replay goes on from the last message sent, with a new consumer.
func (r *replayRun) fetch() (n int, gap bool, err error) {
	batch, err := r.cons.FetchNoWait(replayBatch)
	if err != nil {
		return 0, false, err
	}
	for m := range batch.Messages() {
		meta, err := m.Metadata()
		if err != nil {
			return n, false, err
		}
		if meta.Sequence.Consumer != r.delivered+1 {
			return n, true, nil
		}
		n++
		r.delivered = meta.Sequence.Consumer
		r.pending, r.known = meta.NumPending, true
		if err := r.send(m.Subject(), m.Data(), meta.Sequence.Stream); err != nil {
			return n, false, emitError{err}
		}
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		return n, false, err
	}
	return n, false, nil
}

// emitError is a run's emit failing (the socket gone), as opposed to
// reading failing.
type emitError struct{ error }

func (e emitError) Unwrap() error { return e.error }

// send emits one stored message, unless a new consumer gave it again.
func (r *replayRun) send(subject string, data []byte, seq uint64) error {
	if seq <= r.last {
		return nil
	}
	if err := r.emit(subject, data, seq); err != nil {
		return err
	}
	r.last = seq
	r.sent++
	return nil
}

// waitStalled paces asking again a consumer that has messages it did not
// hand over yet: a new consumer on a node still catching up (seen right
// after a NATS node failed) answers "none" for a moment. After
// replayStall the replay goes on without it, by message gets from the
// stream's leader.
func (r *replayRun) waitStalled() error {
	if r.stalled.IsZero() {
		r.stalled = time.Now()
	} else if time.Since(r.stalled) > replayStall {
		r.g.log.Warn("replay consumer stalled; replaying by message gets", "for", r.who, "pending", r.pending, "stalled", replayStall.String())
		r.dropConsumer()
		r.byGet = true
		return nil
	}
	select {
	case <-r.ctx.Done():
		return fmt.Errorf("replay: %d messages pending: %w", r.pending, r.ctx.Err())
	case <-time.After(replayRetryWait):
		return nil
	}
}

// dropConsumer deletes the run's consumer, if any.
func (r *replayRun) dropConsumer() {
	if r.cons != nil {
		r.g.dropConsumer(r.cons.CachedInfo().Name)
		r.cons = nil
	}
}

// replayConsumer creates the consumer of one replay: the messages on
// filters with a seq above after, unacknowledged, in memory, on one
// node. The server places it on a node of the stream it believes alive;
// for a while after a node fails (until the cluster notices) that may be
// the failed node, where the consumer never starts and its creation is
// never answered; and while the JetStream meta group has no leader (4-9
// s after its node fails) no creation is answered. So the attempt waits
// at most consumerCreateWait, and when it fails the caller replays
// without a consumer.
func (g *Gateway) replayConsumer(ctx context.Context, filters []string, after uint64) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		FilterSubjects:    filters,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       after + 1,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: replayConsumerIdle,
	}
	cfg.Name = "replay_" + newConnID()
	attempt, cancel := context.WithTimeout(ctx, consumerCreateWait)
	defer cancel()
	cons, err := g.js.CreateConsumer(attempt, chat.StreamName, cfg)
	if err == nil {
		return cons, nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
		// Unanswered: the consumer may exist, on a node that is gone.
		g.dropConsumer(cfg.Name)
	}
	return nil, fmt.Errorf("replay consumer: %w", err)
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
// back; consumerCreateWait bounds the attempt to create the consumer (a
// healthy cluster answers in milliseconds; past it the replay goes on by
// message gets); a consumer left behind ends
// after replayConsumerIdle without requests.
const (
	replayRetryWait    = 50 * time.Millisecond
	replayStall        = 2 * time.Second
	consumerCreateWait = time.Second
	replayConsumerIdle = 30 * time.Second
)
