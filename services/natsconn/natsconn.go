// Package natsconn connects a natter service to NATS the same way in every
// service: named connection, reconnect forever, connection events logged.
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/services/config"
)

// ReconnectWait is the pause between reconnect attempts to the same server.
const ReconnectWait = 500 * time.Millisecond

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
