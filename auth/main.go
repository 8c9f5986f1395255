// Command auth owns natter's users: it registers them in MongoDB, checks
// their passwords and issues the signed tokens every other service
// verifies offline.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/natter/natter/auth/limits"
	"github.com/natter/natter/auth/password"
	"github.com/natter/natter/auth/users"
	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/config"
	"github.com/natter/natter/services/logging"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/ops"
	"github.com/natter/natter/services/token"
	"github.com/natter/natter/services/usercache"
	"github.com/natter/natter/services/version"
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
	MongoURI       string
	MongoDB        string
	KeyFile        string // PEM Ed25519 private key
	KeyPEM         string // or the PEM itself (from a secret store)
	GenerateKey    bool   // create KeyFile if missing (dev)
	TokenLifetime  time.Duration
	Argon2         password.Params
	HashWorkers    int
	Limits         Limits
	TrustedProxies string         // as given
	Proxies        []netip.Prefix // TrustedProxies parsed
	CookieSecure   bool
	ReadTimeout    time.Duration // a request, headers and body, is read within this
	Replicas       int
}

// Timing limits of the MongoDB client and start-up.
const (
	// mongoTimeout bounds one database operation.
	mongoTimeout = 5 * time.Second
	// mongoSelectTimeout bounds the wait for a reachable server, so a
	// request fails fast with "unavailable" when MongoDB is down.
	mongoSelectTimeout = 3 * time.Second
	// mongoHeartbeat is how often the driver checks servers, so it sees a
	// restarted MongoDB within seconds.
	mongoHeartbeat = 2 * time.Second
)

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	var memory, iterations, parallelism int
	fs := config.New(args[0], getenv, stderr)
	fs.Base(&c.Base, "127.0.0.1:8081")
	fs.String(&c.MongoURI, "mongo-uri", "MONGO_URI", "mongodb://127.0.0.1:27017/", "MongoDB connection string")
	fs.String(&c.MongoDB, "mongo-db", "MONGO_DB", "natter", "MongoDB database name")
	fs.String(&c.KeyFile, "signing-key-file", "AUTH_SIGNING_KEY_FILE", "", "PEM Ed25519 private key file that signs tokens")
	fs.String(&c.KeyPEM, "signing-key", "AUTH_SIGNING_KEY", "", "the signing key's PEM, instead of a file")
	fs.Bool(&c.GenerateKey, "generate-signing-key", "AUTH_GENERATE_SIGNING_KEY", false, "create the key file if missing (development)")
	fs.Duration(&c.TokenLifetime, "token-lifetime", "TOKEN_LIFETIME", token.DefaultLifetime, "how long a token is valid")
	fs.Int(&memory, "argon2-memory-kib", "ARGON2_MEMORY_KIB", int(password.DefaultParams.MemoryKiB), "argon2id memory per hash, KiB")
	fs.Int(&iterations, "argon2-iterations", "ARGON2_ITERATIONS", int(password.DefaultParams.Iterations), "argon2id passes")
	fs.Int(&parallelism, "argon2-parallelism", "ARGON2_PARALLELISM", int(password.DefaultParams.Parallelism), "argon2id lanes")
	fs.Int(&c.HashWorkers, "hash-workers", "HASH_WORKERS", runtime.NumCPU(), "password hashes computed at once")
	fs.Duration(&c.Limits.HashQueueTimeout, "hash-queue-timeout", "HASH_QUEUE_TIMEOUT", 5*time.Second, "longest wait for a hashing slot (then 503 busy)")
	fs.Duration(&c.Limits.Window, "limit-window", "LIMIT_WINDOW", 15*time.Minute, "quiet time that resets the abuse counters")
	fs.Int(&c.Limits.LoginPerAccount, "login-failures-per-account", "LOGIN_FAILURES_PER_ACCOUNT", 10, "failed logins per account per window")
	fs.Int(&c.Limits.LoginPerAddress, "login-failures-per-address", "LOGIN_FAILURES_PER_ADDRESS", 50, "failed logins per client address per window")
	fs.Int(&c.Limits.RegistrationsPerAddr, "registrations-per-address", "REGISTRATIONS_PER_ADDRESS", 20, "registrations per client address per window")
	fs.String(&c.TrustedProxies, "trusted-proxies", "TRUSTED_PROXIES", "", "gateway addresses or CIDRs whose X-Forwarded-For is trusted")
	fs.Duration(&c.ReadTimeout, "http-read-timeout", "HTTP_READ_TIMEOUT", 10*time.Second, "longest time to read one request, headers and body")
	fs.Bool(&c.CookieSecure, "cookie-secure", "COOKIE_SECURE", false, "mark the token cookie Secure (natter served over HTTPS)")
	fs.Replicas(&c.Replicas)
	if err := fs.Parse(args[1:]); err != nil {
		return c, err
	}
	if memory < 8 || iterations < 1 || parallelism < 1 || parallelism > 255 {
		return c, fmt.Errorf("argon2 parameters m=%d t=%d p=%d out of range", memory, iterations, parallelism)
	}
	c.Argon2 = password.Params{MemoryKiB: uint32(memory), Iterations: uint32(iterations), Parallelism: uint8(parallelism)}
	if c.KeyFile == "" && c.KeyPEM == "" {
		return c, errors.New("no token signing key: set AUTH_SIGNING_KEY_FILE (and AUTH_GENERATE_SIGNING_KEY=true to create it in development) or AUTH_SIGNING_KEY")
	}
	if c.TokenLifetime < time.Minute {
		return c, fmt.Errorf("token lifetime %s: want at least 1m", c.TokenLifetime)
	}
	proxies, err := parseProxies(c.TrustedProxies)
	if err != nil {
		return c, fmt.Errorf("trusted proxies: %w", err)
	}
	c.Proxies = proxies
	if c.ReadTimeout < 100*time.Millisecond {
		return c, fmt.Errorf("http read timeout %s: want at least 100ms", c.ReadTimeout)
	}
	if c.Limits.LoginPerAccount < 1 || c.Limits.LoginPerAddress < 1 || c.Limits.RegistrationsPerAddr < 1 || c.Limits.Window < time.Second {
		return c, errors.New("abuse limits must be at least 1 per window of at least 1s")
	}
	return c, nil
}

// parseProxies reads a comma-separated list of addresses and CIDRs; an
// address is a prefix of its full length.
func parseProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR", f)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// run starts auth and serves until ctx ends: configuration, signing key,
// MongoDB and NATS clients, the API, its background setup and micro
// service, then HTTP.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == ops.HealthcheckCommand {
		return ops.Healthcheck(ctx, args[1:], stdout)
	}
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log, err := logging.New(stdout, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	logConfig(log, cfg)
	key, err := signingKey(log, cfg)
	if err != nil {
		return err
	}

	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	mc, err := connectMongo(cfg)
	if err != nil {
		return err
	}
	defer func() { _ = mc.Disconnect(context.Background()) }()
	nc, js, err := natsconn.ConnectJetStream(cfg.Base, "auth", log)
	if err != nil {
		return err
	}
	defer natsconn.Drain(nc, natsconn.DrainTimeout)

	reg := ops.NewRegistry()
	a, err := newAPI(log, cfg, reg, mc.Database(cfg.MongoDB), nc, key)
	if err != nil {
		return err
	}
	a.ready = ops.Setup(ctx, log, "storage", ops.SetupRetry, func(ctx context.Context) error {
		return a.setup(ctx, js, cfg)
	}, ops.PermanentIs(chat.ErrConfigConflict), fail)
	svc, err := addMicro(nc, a)
	if err != nil {
		return fmt.Errorf("micro service: %w", err)
	}
	defer func() { _ = svc.Stop() }()

	if err := serve(ctx, log, cfg, reg, a, mc); err != nil {
		return err
	}
	if err := ops.Cause(ctx); err != nil {
		return err
	}
	log.Info("auth stopped")
	return nil
}

// logConfig logs the configuration at start, the signing key by where it
// comes from, never its value.
func logConfig(log *slog.Logger, cfg Config) {
	keySource := "AUTH_SIGNING_KEY (value hidden)"
	if cfg.KeyPEM == "" {
		keySource = cfg.KeyFile
	}
	log.Info("starting auth", append(cfg.LogAttrs(), "version", version.Current(),
		"mongo_uri", config.RedactURL(cfg.MongoURI), "mongo_db", cfg.MongoDB,
		"signing_key", keySource, "token_lifetime", cfg.TokenLifetime.String(),
		"argon2", fmt.Sprintf("m=%d,t=%d,p=%d", cfg.Argon2.MemoryKiB, cfg.Argon2.Iterations, cfg.Argon2.Parallelism),
		"hash_workers", cfg.HashWorkers, "hash_queue_timeout", cfg.Limits.HashQueueTimeout.String(),
		"limit_window", cfg.Limits.Window.String(), "login_failures_per_account", cfg.Limits.LoginPerAccount,
		"login_failures_per_address", cfg.Limits.LoginPerAddress, "registrations_per_address", cfg.Limits.RegistrationsPerAddr,
		"trusted_proxies", cfg.TrustedProxies, "cookie_secure", cfg.CookieSecure, "http_read_timeout", cfg.ReadTimeout.String(), "js_replicas", cfg.Replicas)...)
}

// signingKey reads the key from the configured PEM or file, creating the
// file if asked to.
func signingKey(log *slog.Logger, c Config) (token.Key, error) {
	if c.KeyPEM != "" {
		return token.ParseKeyPEM([]byte(c.KeyPEM))
	}
	key, created, err := token.LoadOrCreateKeyFile(c.KeyFile, c.GenerateKey)
	if err == nil && created {
		log.Info("generated a new signing key", "file", c.KeyFile, "kid", key.ID)
	}
	return key, err
}

// connectMongo makes the MongoDB client; it connects lazily, so auth starts
// (alive, not ready) while MongoDB is down.
func connectMongo(cfg Config) (*mongo.Client, error) {
	mc, err := mongo.Connect(options.Client().ApplyURI(cfg.MongoURI).
		SetAppName("natter-auth").
		SetTimeout(mongoTimeout).
		SetServerSelectionTimeout(mongoSelectTimeout).
		SetHeartbeatInterval(mongoHeartbeat))
	if err != nil {
		return nil, fmt.Errorf("mongo %s: %w", config.RedactURL(cfg.MongoURI), err)
	}
	return mc, nil
}

// newAPI wires the handlers' dependencies and registers their metrics on
// reg. What needs NATS JetStream or MongoDB indexes comes later, in setup.
func newAPI(log *slog.Logger, cfg Config, reg prometheus.Registerer, db *mongo.Database, nc *nats.Conn, key token.Key) (*api, error) {
	verifier := token.NewVerifier()
	if err := verifier.SetKeys(token.JWKS{Keys: []token.JWK{key.PublicJWK()}}); err != nil {
		return nil, err
	}
	pool, err := password.NewPool(cfg.HashWorkers, cfg.Argon2)
	if err != nil {
		return nil, err
	}
	a := &api{
		log: log, users: users.New(db), pool: pool, key: key, verifier: verifier,
		nc: nc, lifetime: cfg.TokenLifetime, limits: cfg.Limits, secure: cfg.CookieSecure, proxies: cfg.Proxies, common: commonPasswords(),
		public: usercache.New(usercache.Config{}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auth_logins_total", Help: "Login attempts by result (ok or the error code).",
		}, []string{"result"}),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auth_registrations_total", Help: "Registration attempts by result (ok or the error code).",
		}, []string{"result"}),
	}
	reg.MustRegister(a.logins, a.registrations, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "auth_password_hashes_running", Help: "Password hashes being computed now (bounded by -hash-workers).",
	}, func() float64 { return float64(pool.InUse()) }))
	return a, nil
}

// setup creates the users' indexes and auth's buckets; it is retried
// until MongoDB and NATS are reachable.
func (a *api) setup(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if err := a.users.EnsureIndexes(ctx); err != nil {
		return err
	}
	revoked, err := chat.EnsureRevokedBucket(ctx, js, cfg.Replicas)
	if err != nil {
		return err
	}
	lkv, err := chat.EnsureAuthLimitsBucket(ctx, js, cfg.Limits.Window, cfg.Replicas)
	if err != nil {
		return err
	}
	a.js, a.revoked, a.counters = js, revoked, limits.New(lkv, cfg.Limits.Window)
	return nil
}

// serve answers HTTP on cfg.HTTPAddr until ctx ends, ready once MongoDB
// and NATS answer and setup is done.
func serve(ctx context.Context, log *slog.Logger, cfg Config, reg *prometheus.Registry, a *api, mc *mongo.Client) error {
	handler, err := newServer(log, reg, a, cfg.Proxies, []ops.Check{
		{Name: "mongo", Run: func(ctx context.Context) error { return mc.Ping(ctx, nil) }},
		{Name: "nats", Run: natsconn.Ready(a.nc)},
		a.ready.Check(),
	})
	if err != nil {
		return fmt.Errorf("trusted proxies: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	log.Info("listening", "addr", ln.Addr().String())
	srv := ops.NewServer(handler) // header timeout, idle timeout, header size
	// Request bodies are small (16 KiB at most): one that takes longer than
	// this to arrive is a client holding a connection open, not a slow
	// network. Answers are small and need no write timeout; handlers bound
	// their own waits (hashing queue, database, NATS).
	srv.ReadTimeout = cfg.ReadTimeout
	return ops.Serve(ctx, srv, ln)
}
