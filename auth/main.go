// Command auth owns natter's users: it registers them in MongoDB, checks
// their passwords and issues the signed tokens every other service
// verifies offline.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/natter/natter/services/config"
	"github.com/natter/natter/services/logging"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/ops"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "auth:", err)
		os.Exit(1)
	}
}

// Config is the auth service's configuration.
type Config struct {
	config.Base
	MongoURI string
	MongoDB  string
}

// Timing limits of the MongoDB client.
const (
	// mongoTimeout bounds one database operation.
	mongoTimeout = 5 * time.Second
	// mongoSelectTimeout bounds the wait for a reachable server, so a
	// request fails fast with "unavailable" when MongoDB is down.
	mongoSelectTimeout = 3 * time.Second
)

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	fs := config.New(args[0], getenv, stderr)
	fs.Base(&c.Base, "127.0.0.1:8081")
	fs.String(&c.MongoURI, "mongo-uri", "MONGO_URI", "mongodb://127.0.0.1:27017/", "MongoDB connection string")
	fs.String(&c.MongoDB, "mongo-db", "MONGO_DB", "natter", "MongoDB database name")
	err := fs.Parse(args[1:])
	return c, err
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log, err := logging.New(stdout, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	log.Info("starting auth", append(cfg.LogAttrs(),
		"mongo_uri", config.RedactURL(cfg.MongoURI), "mongo_db", cfg.MongoDB)...)

	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)

	mc, err := mongo.Connect(options.Client().ApplyURI(cfg.MongoURI).
		SetAppName("natter-auth").
		SetTimeout(mongoTimeout).
		SetServerSelectionTimeout(mongoSelectTimeout))
	if err != nil {
		return fmt.Errorf("mongo %s: %w", config.RedactURL(cfg.MongoURI), err)
	}
	defer func() { _ = mc.Disconnect(context.Background()) }()

	nc, err := natsconn.Connect(cfg.NATSURL, "natter-auth", log)
	if err != nil {
		return err
	}
	defer natsconn.Drain(nc, 2*time.Second)

	reg := ops.NewRegistry()
	handler := newServer(log, reg, []ops.Check{
		{Name: "mongo", Run: func(ctx context.Context) error { return mc.Ping(ctx, nil) }},
		{Name: "nats", Run: natsconn.Ready(nc)},
	})
	if err := ops.ListenAndServe(ctx, log, cfg.HTTPAddr, handler); err != nil {
		return err
	}
	if err := ops.Cause(ctx); err != nil {
		return err
	}
	log.Info("auth stopped")
	return nil
}
