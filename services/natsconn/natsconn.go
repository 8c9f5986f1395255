// Package natsconn connects a natter service to NATS the same way in every
// service: named connection, reconnect forever, connection events logged.
package natsconn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/config"
)

// ReconnectWait is the pause between reconnect attempts to the same server.
const ReconnectWait = 500 * time.Millisecond

// FlusherTimeout bounds a write to the server. nats.go's minute let a
// gateway writing to a node cut off from the network (its socket buffer
// full, the node silent) block every publish, and its presence
// heartbeat, for that minute (the fault suite's partition). A write that
// times out now ends the connection (nats.go's ReconnectOnFlusherError;
// without it the connection stayed, failing every write): a server that
// reads nothing for 5 s is given up for another.
const FlusherTimeout = 5 * time.Second

// ErrNotConnected is the readiness error while the connection is down.
var ErrNotConnected = errors.New("not connected to NATS")

// Connect dials url as client name. It returns even when no server is up
// yet: the connection keeps trying, and Ready reports it until it succeeds,
// so services can start in any order.
func Connect(url, name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	base := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(ReconnectWait),
		nats.FlusherTimeout(FlusherTimeout),
		nats.ReconnectOnFlusherError(),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("nats connected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				return // our own Close or Drain
			}
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("nats async error", "subject", subject, "err", err)
		}),
	}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("nats %s: %w", config.RedactURL(url), err)
	}
	return nc, nil
}

// Ready is a readiness check: the connection is up and the server answers.
func Ready(nc *nats.Conn) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if !nc.IsConnected() {
			return fmt.Errorf("%w (%s)", ErrNotConnected, nc.Status())
		}
		if err := nc.FlushWithContext(ctx); err != nil {
			return fmt.Errorf("nats flush: %w", err)
		}
		return nil
	}
}

// Drain drains nc (pending messages handled, then closed), waiting at most
// timeout; used at shutdown so in-flight work is not dropped.
func Drain(nc *nats.Conn, timeout time.Duration) {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(timeout):
		nc.Close()
	}
}

// OnReconnect runs f after each reconnect of nc, after what Connect
// already does then (logging). Call it before nc can reconnect, during
// setup.
func OnReconnect(nc *nats.Conn, f func()) {
	prev := nc.Opts.ReconnectedCB
	nc.SetReconnectHandler(func(c *nats.Conn) {
		if prev != nil {
			prev(c)
		}
		f()
	})
}

// OnDisconnect runs f when nc loses its server (not on Close or Drain),
// after what Connect already does then (logging). Call it during setup.
// A reconnect forced by ForceReconnect reports no error: it counts (a
// gateway that skipped it kept its sockets live across the gap, and lost
// what they missed), only a closed connection does not.
func OnDisconnect(nc *nats.Conn, f func()) {
	prev := nc.Opts.DisconnectedErrCB
	nc.SetDisconnectErrHandler(func(c *nats.Conn, err error) {
		if prev != nil {
			prev(c, err)
		}
		if err != nil || !c.IsClosed() {
			f()
		}
	})
}

// OnAsyncError runs f on each asynchronous error of nc (a slow consumer,
// a permissions violation), after what Connect already does then
// (logging). Call it during setup.
func OnAsyncError(nc *nats.Conn, f func(sub *nats.Subscription, err error)) {
	prev := nc.Opts.AsyncErrorCB
	nc.SetErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
		if prev != nil {
			prev(c, sub, err)
		}
		f(sub, err)
	})
}

// ErrService is a micro endpoint's error answer (its
// Nats-Service-Error-Code header), wrapped with the code and message.
var ErrService = errors.New("service error")

// RequestJSON sends req (JSON, or nothing when nil) to a micro endpoint
// and decodes its answer into resp; an error answer is an ErrService.
func RequestJSON(ctx context.Context, nc *nats.Conn, subject string, req, resp any) error {
	var body []byte
	if req != nil {
		var err error
		if body, err = json.Marshal(req); err != nil {
			return err
		}
	}
	m, err := nc.RequestWithContext(ctx, subject, body)
	if err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	if code := m.Header.Get(micro.ErrorCodeHeader); code != "" {
		return fmt.Errorf("%s: %w %s: %s", subject, ErrService, code, m.Header.Get(micro.ErrorHeader))
	}
	if err := json.Unmarshal(m.Data, resp); err != nil {
		return fmt.Errorf("%s answer: %w", subject, err)
	}
	return nil
}

// RespondError answers a micro request with an error: status (an HTTP
// status code) as its Nats-Service-Error-Code, message as its
// Nats-Service-Error, and natter's error body (chat.Error) as its data, so
// a NATS client reads the same error as an HTTP one. RequestJSON turns it
// into an ErrService.
func RespondError(r micro.Request, status int, code, message string) error {
	body, err := json.Marshal(chat.Error{Code: code, Message: message})
	if err != nil {
		return err
	}
	return r.Error(strconv.Itoa(status), message, body)
}

// DrainTimeout bounds a service's final drain, within its 10 s to stop.
const DrainTimeout = 2 * time.Second

// InboxPrefix is where service's request inboxes live: _INBOX.<service>.,
// so a deployment can let each service subscribe to its own replies only
// (deploy/nats/accounts.conf).
func InboxPrefix(service string) string { return "_INBOX." + service }

// ConnectJetStream is Connect with a JetStream context on the connection,
// what every natter service starts with: named natter-<service>, its
// inboxes under InboxPrefix(service), the credentials of b; jsOpts
// configure the JetStream context.
func ConnectJetStream(b config.Base, service string, log *slog.Logger, jsOpts ...jetstream.JetStreamOpt) (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{nats.CustomInboxPrefix(InboxPrefix(service))}
	switch {
	case b.NATSCreds != "":
		opts = append(opts, nats.UserCredentials(b.NATSCreds))
	case b.NATSUser != "":
		opts = append(opts, nats.UserInfo(b.NATSUser, b.NATSPass))
	}
	nc, err := Connect(b.NATSURL, "natter-"+service, log, opts...)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, jsOpts...)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// WatchdogPeriod and WatchdogMisses: a server silent for about
// WatchdogPeriod times WatchdogMisses is given up (see Watchdog). A ping
// answered in more than a second with nothing else received meanwhile,
// three times in a row, is a server that is not serving: a busy one
// still sends. Leaving one wrongly costs a reconnect, which the gateway
// catches up after without closing its sockets.
const (
	WatchdogPeriod = time.Second
	WatchdogMisses = 3
)

// Watchdog moves nc to another server when the one it is on stops
// answering with the connection left open (its node cut off from the
// network, or paused): nats.go's own pings (every 2 minutes, two missed)
// leave it there for 4 to 6 minutes. Every period it round-trips a ping;
// after misses in a row (timeouts with nothing received meanwhile) it
// forces a reconnect: 4-5 s after the server went silent with the
// defaults, as the first timeout after traffic is not a miss (fault
// suite, scenario 3). A write blocked on a full socket buffer can hold it
// longer (nats.go's flusher timeout, a minute). It runs until ctx ends.
// The presence service and the gateway run it: on a cut node a presence
// replica served no one for the fault suite's whole partition, and a
// gateway's sends waited until its presence lease, unanswered for two
// TTLs, made it reconnect.
func Watchdog(ctx context.Context, nc *nats.Conn, period time.Duration, misses int, log *slog.Logger) {
	t := time.NewTicker(period)
	defer t.Stop()
	missed := 0
	var heard uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !nc.IsConnected() {
			missed = 0 // reconnecting already
			continue
		}
		err := nc.FlushTimeout(period)
		// A server still sending (a busy one, slow to answer the ping) is
		// not silent.
		in := nc.Stats().InBytes
		switch {
		case errors.Is(err, nats.ErrTimeout) && in == heard:
			missed++
		case err == nil || in != heard:
			missed = 0
		}
		heard = in
		if missed >= misses {
			log.Warn("nats server silent; reconnecting to another", "server", nc.ConnectedUrlRedacted(), "missed", missed)
			_ = nc.ForceReconnect()
			missed = 0
		}
	}
}
