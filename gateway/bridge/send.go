package bridge

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
)

// handleSend validates a send and stores it; the ack (with its sequence)
// follows when the stream confirms. The sender is the token's user,
// whatever the frame says.
//
// Stores are pipelined: up to MaxSendsInFlight of a socket's sends wait
// for the stream at once, published in the order they were read, so
// stored and acked in that order when they succeed. A send that fails
// (the client retries it) or that the client library republishes (no
// stream leader for a moment) may be stored after the sends that followed
// it; its seq says where. Past the bound the reader waits, which holds
// the client back through TCP.
func (g *Gateway) handleSend(c *client, f chat.ClientFrame) {
	if e := checkSend(f, g.limits.MaxTextChars); e != nil {
		c.reply(*e)
		return
	}
	if e := g.checkConversation(c, f.ID, f.To); e != nil {
		c.reply(*e)
		return
	}
	subject, e := g.destination(c, f.To)
	if e != nil {
		e.ID = f.ID
		c.reply(*e)
		return
	}
	m := chat.Message{ID: f.ID, From: c.user, To: *f.To, Text: f.Text, TS: time.Now().UTC()}
	data := chat.Encode(m)
	if e := g.spend(c.user.ID, len(data)); e != nil {
		e.ID = f.ID
		c.reply(*e)
		return
	}
	select {
	case c.sendSlots <- struct{}{}:
	case <-c.conn.Closing():
		return // nobody to ack; the client retries with the same id
	}
	msg := &nats.Msg{Subject: subject, Data: data}
	g.acks.add(msg, pendingSend{c: c, id: f.ID, to: *f.To, start: time.Now()})
	// The dedupe key is the sender's id with theirs: a retry is stored once,
	// and two users' ids never collide.
	if _, err := g.js.PublishMsgAsync(msg, jetstream.WithMsgID(c.user.ID+":"+f.ID),
		jetstream.WithRetryAttempts(storeRetries), jetstream.WithRetryWait(storeRetryWait)); err != nil {
		if _, ok := g.acks.take(msg); ok {
			g.log.Warn("publish failed", "subject", subject, "err", err)
			c.reply(errorFrame(f.ID, chat.CodeUnavailable, "could not store the message; retry with the same id"))
		}
	}
}

// destination is the subject of a checked send, once a user recipient is
// known to exist.
func (g *Gateway) destination(c *client, to *chat.To) (string, *chat.ErrorFrame) {
	if to.User != "" && to.User != c.user.ID {
		exists, err := g.userExists(to.User)
		if err != nil {
			g.log.Warn("recipient lookup failed", "err", err)
			return "", refusal("", chat.CodeUnavailable, "cannot check the recipient now; retry")
		}
		if !exists {
			return "", refusal("", chat.CodeUnknownRecipient, fmt.Sprintf("no user %q", to.User))
		}
	}
	return conversationSubject(c.user.ID, to), nil
}

// userExists says whether id is a user: yes if the hub sees them
// (online, or with a socket here), else as auth says (remembered for a
// while: see authclient).
func (g *Gateway) userExists(id string) (bool, error) {
	if g.hub.seesUser(id) {
		return true, nil
	}
	return g.auth.Exists(context.Background(), id)
}

// Sends waiting for the stream at once: per socket, and per gateway (past
// that, a send waits briefly, then is refused with unavailable).
const (
	MaxSendsInFlight  = 32
	maxStoresInFlight = 16384
)

// A stream without a leader (electing one for 4 to 9 s after a NATS
// node failed) has no responder: a store is tried again every
// storeRetryWait for publishTimeout before the send is refused, so it is
// acked as soon as the leader is there rather than after the client's
// own retry (2 s after the refusal). nats.go restarts the ack timeout
// with each try, so a last try that gets no answer at all fails only
// publishTimeout after it: a send may so hold its slot twice that.
const (
	storeRetryWait = 250 * time.Millisecond
	storeRetries   = int(publishTimeout / storeRetryWait)
)

// pendingSend is a send published to the stream, waiting for its ack.
type pendingSend struct {
	c     *client
	id    string
	to    chat.To
	start time.Time
}

// sendAcks answers the sends waiting for the stream. The JetStream context
// calls stored or failed for each (from its reply handler, or its timeout
// after publishTimeout), so no goroutine waits per send; the stream acks
// one socket's sends in the order they were stored.
type sendAcks struct {
	mu      sync.Mutex
	pending map[*nats.Msg]pendingSend
}

func newSendAcks() *sendAcks { return &sendAcks{pending: map[*nats.Msg]pendingSend{}} }

// add registers p for m before m is published: its ack may come first.
func (a *sendAcks) add(m *nats.Msg, p pendingSend) {
	a.mu.Lock()
	a.pending[m] = p
	a.mu.Unlock()
}

// take removes m's send and frees its slot.
func (a *sendAcks) take(m *nats.Msg) (pendingSend, bool) {
	a.mu.Lock()
	p, ok := a.pending[m]
	delete(a.pending, m)
	a.mu.Unlock()
	if ok {
		<-p.c.sendSlots
	}
	return p, ok
}

// stored acks a send with its stream sequence.
func (a *sendAcks) stored(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
	if p, ok := a.take(m); ok {
		p.c.gw.metrics.publishWait.Observe(time.Since(p.start).Seconds())
		p.c.reply(chat.AckFrame{Type: chat.FrameAck, ID: p.id, Seq: ack.Sequence})
		p.c.gw.sentReads.note(p.c.user.ID, p.to, ack.Sequence)
	}
}

// failed refuses a send the stream did not store; the client retries
// with the same id, stored at most once.
func (a *sendAcks) failed(_ jetstream.JetStream, m *nats.Msg, err error) {
	if p, ok := a.take(m); ok {
		p.c.gw.log.Warn("publish failed", "subject", m.Subject, "err", err)
		p.c.reply(errorFrame(p.id, chat.CodeUnavailable, "could not store the message; retry with the same id"))
	}
}

// quotaTimeout bounds the KV round trip of a quota lease.
const quotaTimeout = 2 * time.Second

// spend charges one send of size stored bytes to the user's quotas
// (before it is stored: a send that then fails, or a retry of an id
// already stored, is charged again; the page retries only refusals):
// sends per minute and stored bytes per hour, each across all of the
// user's sockets and gateways (see package quota). A refusal says when
// sending resumes; a bucket that cannot be reached refuses the send as
// unavailable (the client retries).
func (g *Gateway) spend(user string, size int) *chat.ErrorFrame {
	ctx, cancel := context.WithTimeout(context.Background(), quotaTimeout)
	defer cancel()
	ok, wait, err := g.sendQuota.Spend(ctx, user, 1)
	if err == nil && ok {
		ok, wait, err = g.byteQuota.Spend(ctx, user, int64(size))
		if err == nil && !ok {
			e := quotaRefusal("", wait, fmt.Sprintf(
				"you stored %d bytes of messages this hour, the most one user may; sending resumes in %d s", g.limits.UserBytesPerHour, seconds(wait)))
			return &e
		}
	} else if err == nil {
		e := quotaRefusal("", wait, fmt.Sprintf(
			"you sent %d messages this minute, the most one user may; sending resumes in %d s", g.limits.UserSendsPerMinute, seconds(wait)))
		return &e
	}
	if err != nil {
		g.log.Warn("quota unavailable", "err", err)
		return refusal("", chat.CodeUnavailable, "cannot check your quota now; retry with the same id")
	}
	return nil
}

func seconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }
