// Package config reads a service's settings from command-line flags whose
// defaults come from environment variables: a flag beats its variable, the
// variable beats the built-in default. There is no config file.
package config

import (
	"flag"
	"fmt"
	"github.com/natter/natter/services/chat"
	"io"
	"strings"
	"time"
)

// Set is a flag set whose flags may be given by environment variables.
type Set struct {
	fs     *flag.FlagSet
	getenv func(string) string
	env    map[string]string // flag name -> variable name
}

// New returns an empty Set for the program name, reading variables with
// getenv (os.Getenv in main, a map in tests).
func New(name string, getenv func(string) string, usageOut io.Writer) *Set {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(usageOut)
	return &Set{fs: fs, getenv: getenv, env: map[string]string{}}
}

func (s *Set) usage(env, usage string) string {
	if env == "" {
		return usage
	}
	return fmt.Sprintf("%s (env %s)", usage, env)
}

// String defines a string setting; env may be empty for flag-only settings.
func (s *Set) String(p *string, name, env, def, usage string) {
	s.fs.StringVar(p, name, def, s.usage(env, usage))
	s.env[name] = env
}

// Int defines an integer setting.
func (s *Set) Int(p *int, name, env string, def int, usage string) {
	s.fs.IntVar(p, name, def, s.usage(env, usage))
	s.env[name] = env
}

// Duration defines a duration setting, written like "5s" or "1h30m".
func (s *Set) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	s.fs.DurationVar(p, name, def, s.usage(env, usage))
	s.env[name] = env
}

// Bool defines a boolean setting.
func (s *Set) Bool(p *bool, name, env string, def bool, usage string) {
	s.fs.BoolVar(p, name, def, s.usage(env, usage))
	s.env[name] = env
}

// Parse applies environment variables, then args (without the program
// name). A malformed variable is an error naming the variable.
func (s *Set) Parse(args []string) error {
	var err error
	s.fs.VisitAll(func(f *flag.Flag) {
		env := s.env[f.Name]
		if env == "" || err != nil {
			return
		}
		if v := s.getenv(env); v != "" {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("environment variable %s=%q: %w", env, v, e)
			}
		}
	})
	if err != nil {
		return err
	}
	if err := s.fs.Parse(args); err != nil {
		return err
	}
	if s.fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(s.fs.Args(), " "))
	}
	return nil
}

// RedactURL hides the passwords in a connection string such as
// "mongodb://user:secret@host/db" or a list such as
// "nats://u:secret@a:4222,nats://u:other@b:4222", so it can be logged.
// Strings without credentials come back unchanged.
func RedactURL(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+3])
		s = s[i+3:]
		end := len(s) // this URL runs to the next one's scheme, or the end
		if j := strings.Index(s, "://"); j >= 0 {
			end = j
		}
		b.WriteString(redactUserinfo(s[:end]))
		s = s[end:]
	}
}

// redactUserinfo masks the password (or lone token) of a URL's part
// after "scheme://".
func redactUserinfo(u string) string {
	rest := u
	if end := strings.IndexAny(rest, "/?#"); end >= 0 {
		rest = rest[:end]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return u
	}
	user, _, hasPassword := strings.Cut(rest[:at], ":")
	if !hasPassword {
		// A lone token (nats://token@host) is itself a secret.
		return "xxxxx" + u[at:]
	}
	return user + ":xxxxx" + u[at:]
}

// Default NATS URL of every service: the dev stack's.
const DefaultNATSURL = "nats://127.0.0.1:4222"

// Base holds the settings every natter service has.
type Base struct {
	HTTPAddr  string
	NATSURL   string
	NATSUser  string
	NATSPass  string // secret: never logged
	NATSCreds string // path of a .creds file (JWT + nkey seed), instead of user and password
	LogFormat string
	LogLevel  string
}

// Base defines the settings every service has; httpAddr is the service's
// default listen address.
func (s *Set) Base(b *Base, httpAddr string) {
	s.String(&b.HTTPAddr, "http-addr", "HTTP_ADDR", httpAddr, "HTTP listen address (health, metrics and API)")
	s.String(&b.NATSURL, "nats-url", "NATS_URL", DefaultNATSURL, "NATS server URL(s), comma-separated")
	s.String(&b.NATSUser, "nats-user", "NATS_USER", "", "NATS user name")
	s.String(&b.NATSPass, "nats-password", "NATS_PASSWORD", "", "NATS user's password (prefer the variable: ps shows flags)")
	s.String(&b.NATSCreds, "nats-creds", "NATS_CREDS", "", "NATS credentials file, instead of user and password")
	s.String(&b.LogFormat, "log-format", "LOG_FORMAT", "text", "log format: text or json")
	s.String(&b.LogLevel, "log-level", "LOG_LEVEL", "info", "log level: debug, info, warn or error")
}

// LogAttrs are the base settings as log attributes, secrets redacted.
func (b Base) LogAttrs() []any {
	return []any{"http_addr", b.HTTPAddr, "nats_url", RedactURL(b.NATSURL), "nats_user", b.NATSUser,
		"nats_password", mask(b.NATSPass), "nats_creds", b.NATSCreds, "log_format", b.LogFormat, "log_level", b.LogLevel}
}

// mask shows whether a secret is set, never the secret.
func mask(secret string) string {
	if secret == "" {
		return ""
	}
	return "xxxxx"
}

// Replicas defines how many copies JetStream keeps of what a service
// creates (the CHAT stream, the presence bucket): 1 on a single server, 3
// on a 3-node cluster.
func (s *Set) Replicas(p *int) {
	s.Int(p, "js-replicas", "JS_REPLICAS", 1, "replicas of each stream and bucket created (3 on a cluster)")
}

// Stream defines the settings of the CHAT stream; Replicas is set apart.
func (s *Set) Stream(o *chat.StreamOptions) {
	d := chat.DefaultStreamOptions()
	s.Duration(&o.Retention, "chat-retention", "CHAT_RETENTION", d.Retention, "how long the CHAT stream keeps messages (0: forever)")
	s.Duration(&o.DedupeWindow, "chat-dedupe-window", "CHAT_DEDUPE_WINDOW", d.DedupeWindow, "how long a retried message id is recognised")
	s.fs.Int64Var(&o.MaxBytes, "chat-max-bytes", d.MaxBytes, s.usage("CHAT_MAX_BYTES", "size cap of the CHAT stream, in bytes per replica; past it the oldest messages go"))
	s.env["chat-max-bytes"] = "CHAT_MAX_BYTES"
	o.MaxMessageBytes = d.MaxMessageBytes
}

// Presence defines the settings of the presence bucket.
func (s *Set) Presence(o *chat.PresenceOptions) {
	s.Duration(&o.TTL, "presence-ttl", "PRESENCE_TTL", chat.DefaultPresenceTTL, "how long a socket stays online without a heartbeat")
}

// Float defines a floating-point setting.
func (s *Set) Float(p *float64, name, env string, def float64, usage string) {
	s.fs.Float64Var(p, name, def, s.usage(env, usage))
	s.env[name] = env
}
