package chat

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrConfigConflict reports a stream or bucket that exists with a
// configuration other than the one a service asked for.
var ErrConfigConflict = errors.New("configuration conflict")

// Defaults of the shared infrastructure; services expose each as a flag.
const (
	// DefaultRetention is how long CHAT keeps messages (history and resume).
	DefaultRetention = 30 * 24 * time.Hour
	// DefaultDedupeWindow is how long a Nats-Msg-Id is remembered, so a
	// client retry within it is stored once.
	DefaultDedupeWindow = 2 * time.Minute
	// DefaultMaxBytes bounds the CHAT stream's size on disk (per replica):
	// past it the oldest messages go, so a full disk never stops every
	// send. 10 GiB is some 30 million ordinary messages.
	DefaultMaxBytes = 10 << 30
	// DefaultMaxMessageBytes bounds one stored message (a 4,000-character
	// text is at most 16,000 bytes of UTF-8, plus the envelope).
	DefaultMaxMessageBytes = 64 * 1024
	// DefaultPresenceHeartbeat is how often a gateway refreshes its
	// presence lease (one key per gateway, whatever its sockets).
	DefaultPresenceHeartbeat = 5 * time.Second
	// DefaultPresenceTTL is how long a gateway's lease lives without a
	// heartbeat: 2.5 heartbeats, so one lost heartbeat is not an absence.
	DefaultPresenceTTL = 12500 * time.Millisecond
)

// StreamOptions are the settings of the CHAT stream that operators choose.
type StreamOptions struct {
	Retention       time.Duration // max age of a message; 0 keeps forever
	DedupeWindow    time.Duration
	MaxMessageBytes int32
	MaxBytes        int64 // the stream's size cap; the oldest messages go past it
	Replicas        int   // 1 locally, 3 on a 3-node cluster
}

// DefaultStreamOptions are the CHAT settings of a single-node setup.
func DefaultStreamOptions() StreamOptions {
	return StreamOptions{
		Retention:       DefaultRetention,
		DedupeWindow:    DefaultDedupeWindow,
		MaxMessageBytes: DefaultMaxMessageBytes,
		MaxBytes:        DefaultMaxBytes,
		Replicas:        1,
	}
}

// StreamConfig is the CHAT stream's configuration for o.
func StreamConfig(o StreamOptions) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "natter chat messages: rooms and direct conversations",
		Subjects:    []string{RoomSubjects, DMSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      o.Retention,
		Duplicates:  o.DedupeWindow,
		MaxMsgSize:  o.MaxMessageBytes,
		MaxBytes:    o.MaxBytes,
		Replicas:    o.Replicas,
		// Direct gets let any replica answer history reads.
		AllowDirect: true,
		// Each stored message is republished under LivePrefix with its
		// stream sequence in the Nats-Sequence header: gateways deliver
		// live from core subscriptions, only what is stored, with its seq.
		RePublish: &jetstream.RePublish{Source: ">", Destination: LivePrefix + ">"},
	}
}

// EnsureStream creates the CHAT stream, or checks that the existing one has
// the configuration o asks for; a difference is an ErrConfigConflict.
func EnsureStream(ctx context.Context, js jetstream.JetStream, o StreamOptions) (jetstream.Stream, error) {
	return ensureStream(ctx, js, StreamConfig(o))
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.CreateStream(ctx, want)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return nil, fmt.Errorf("create stream %s: %w", want.Name, err)
	}
	s, err = js.Stream(ctx, want.Name)
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	diffs := diffStream(have, want)
	if len(diffs) == 0 && have.MaxBytes == want.MaxBytes {
		// Same settings; the server differs only in fields we leave to it.
		return s, nil
	}
	// A stream made before it had a size cap (-1) gets one: an upgrade,
	// not a conflict. Two different caps are a conflict like any setting.
	if len(diffs) == 0 && have.MaxBytes <= 0 && want.MaxBytes > 0 {
		have.MaxBytes = want.MaxBytes
		s, err = js.UpdateStream(ctx, have)
		if err != nil {
			return nil, fmt.Errorf("add a size cap to stream %s: %w", want.Name, err)
		}
		return s, nil
	}
	if have.MaxBytes != want.MaxBytes {
		diffs = append(diffs, fmt.Sprintf("max bytes %d (want %d)", have.MaxBytes, want.MaxBytes))
	}
	return nil, fmt.Errorf("%w: stream %s exists with %s; start every service with the same settings, or change the stream with `nats stream edit %s`",
		ErrConfigConflict, want.Name, strings.Join(diffs, ", "), want.Name)
}

func diffStream(have, want jetstream.StreamConfig) []string {
	var d differ
	d.check("subjects", strings.Join(have.Subjects, ","), strings.Join(want.Subjects, ","))
	d.check("storage", have.Storage, want.Storage)
	d.check("retention policy", have.Retention, want.Retention)
	d.check("discard", have.Discard, want.Discard)
	d.check("max age", have.MaxAge, want.MaxAge)
	d.check("duplicate window", have.Duplicates, want.Duplicates)
	d.check("max message size", have.MaxMsgSize, want.MaxMsgSize)
	d.check("replicas", have.Replicas, want.Replicas)
	d.check("allow direct", have.AllowDirect, want.AllowDirect)
	d.check("republish", republishString(have.RePublish), republishString(want.RePublish))
	return d.diffs
}

func republishString(r *jetstream.RePublish) string {
	if r == nil {
		return "none"
	}
	return r.Source + " -> " + r.Destination
}

// PresenceOptions are the settings of the presence bucket.
type PresenceOptions struct {
	TTL      time.Duration // a gateway lease without heartbeat expires after TTL
	Replicas int
}

// PresenceStreamConfig is the PRESENCE stream: presence changes, kept an
// hour, deduplicated (two replicas report each change with the same
// Nats-Msg-Id) and republished once to presence.changed.<user>.
func PresenceStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        PresenceStream,
		Description: "natter presence changes, deduplicated across presence replicas",
		Subjects:    []string{PresenceEventSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      time.Hour,
		Duplicates:  DefaultDedupeWindow,
		Replicas:    replicas,
		RePublish:   &jetstream.RePublish{Source: "presence.events.>", Destination: "presence.changed.>"},
	}
}

// EnsurePresenceStream creates the PRESENCE stream or checks it.
func EnsurePresenceStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	return ensureStream(ctx, js, PresenceStreamConfig(replicas))
}

// DefaultPresenceOptions are the presence bucket settings of a single node.
func DefaultPresenceOptions() PresenceOptions {
	return PresenceOptions{TTL: DefaultPresenceTTL, Replicas: 1}
}

// PresenceBucketConfig is the presence bucket's configuration for o.
func PresenceBucketConfig(o PresenceOptions) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      PresenceBucket,
		Description: "natter presence: one lease per gateway, refreshed by it, and one key per live socket",
		History:     1,
		// Every put restarts a key's age: a gateway's lease disappears
		// after TTL once the gateway stops refreshing it, whatever way it
		// died. Socket keys are written with a per-key TTL of "never"
		// (they live by their gateway's lease, see services/presencekv).
		TTL: o.TTL,
		// Expiry leaves a delete marker, so watchers see the lease go;
		// it also enables the per-key TTL that exempts socket keys.
		LimitMarkerTTL: o.TTL,
		Storage:        jetstream.FileStorage,
		Replicas:       o.Replicas,
	}
}

// PresenceKV is the presence bucket and the JetStream context it lives
// in: socket keys are published with a per-key TTL of "never", which the
// KV API cannot set.
type PresenceKV struct {
	jetstream.KeyValue
	js jetstream.JetStream
}

// JetStream is the context the bucket was opened with.
func (p *PresenceKV) JetStream() jetstream.JetStream { return p.js }

// EnsurePresenceBucket creates the presence bucket, or checks that the
// existing one has the configuration o asks for.
func EnsurePresenceBucket(ctx context.Context, js jetstream.JetStream, o PresenceOptions) (*PresenceKV, error) {
	kv, err := ensureBucket(ctx, js, PresenceBucketConfig(o))
	if err != nil {
		return nil, err
	}
	return &PresenceKV{KeyValue: kv, js: js}, nil
}

// RevokedBucketConfig is the revoked-tokens bucket: one key per revoked
// token id, each created with a per-key TTL equal to the token's remaining
// lifetime, so the record outlives restarts exactly as long as it matters.
func RevokedBucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      RevokedBucket,
		Description: "natter revoked tokens: key = token id, expires with the token",
		History:     1,
		// Enables per-key TTLs; expiry markers are kept this long.
		LimitMarkerTTL: time.Minute,
		Storage:        jetstream.FileStorage,
		Replicas:       replicas,
	}
}

// EnsureRevokedBucket creates the revoked-tokens bucket or checks it.
func EnsureRevokedBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return ensureBucket(ctx, js, RevokedBucketConfig(replicas))
}

// AuthLimitsBucketConfig is auth's failure-counter bucket: an entry not
// updated for window expires, so counts cover failures since the last
// quiet window.
func AuthLimitsBucketConfig(window time.Duration, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      AuthLimitsBucket,
		Description: "natter auth abuse counters: failed logins and registrations per account and address (hashed)",
		History:     1,
		TTL:         window,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// EnsureAuthLimitsBucket creates auth's counter bucket or checks it.
func EnsureAuthLimitsBucket(ctx context.Context, js jetstream.JetStream, window time.Duration, replicas int) (jetstream.KeyValue, error) {
	return ensureBucket(ctx, js, AuthLimitsBucketConfig(window, replicas))
}

// ReadStateBucketConfig is the read cursors' bucket: one key per user
// holding every conversation's cursor (the last seq the user was shown),
// kept until the user's cursors change; no TTL: cursors survive.
func ReadStateBucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      ReadStateBucket,
		Description: "natter read cursors: key = user id, value = conversation -> last seq read",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// EnsureReadStateBucket creates the read cursors' bucket or checks it.
func EnsureReadStateBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return ensureBucket(ctx, js, ReadStateBucketConfig(replicas))
}

// QuotaTTL is how long a user's quota entry outlives its last update:
// longer than the longest quota window, so no count expires within it.
const QuotaTTL = 2 * time.Hour

// QuotaBucketConfig is the gateways' per-user quota bucket: one key per
// user and meter, holding the window it counts and what was spent in it.
func QuotaBucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      QuotaBucket,
		Description: "natter per-user send quotas: key = meter.user, value = window and amount spent",
		History:     1,
		TTL:         QuotaTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// EnsureQuotaBucket creates the quota bucket or checks it.
func EnsureQuotaBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return ensureBucket(ctx, js, QuotaBucketConfig(replicas))
}

// ensureBucket creates a bucket, or checks that the existing one has the
// settings want asks for; a difference is an ErrConfigConflict.
func ensureBucket(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateKeyValue(ctx, want)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketExists) {
		return nil, fmt.Errorf("create bucket %s: %w", want.Bucket, err)
	}
	kv, err = js.KeyValue(ctx, want.Bucket)
	if err != nil {
		return nil, fmt.Errorf("look up bucket %s: %w", want.Bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("bucket %s status: %w", want.Bucket, err)
	}
	var d differ
	d.check("history", st.History(), want.History)
	d.check("ttl", st.TTL(), want.TTL)
	d.check("limit marker ttl", st.LimitMarkerTTL(), want.LimitMarkerTTL)
	if kvs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		cfg := kvs.StreamInfo().Config
		d.check("storage", cfg.Storage, want.Storage)
		d.check("replicas", cfg.Replicas, want.Replicas)
	}
	if len(d.diffs) == 0 {
		return kv, nil
	}
	return nil, fmt.Errorf("%w: bucket %s exists with %s; start every service with the same settings",
		ErrConfigConflict, want.Bucket, strings.Join(d.diffs, ", "))
}

// differ collects "name X (want Y)" for fields that differ.
type differ struct{ diffs []string }

func (d *differ) check(name string, have, want any) {
	if have != want {
		d.diffs = append(d.diffs, fmt.Sprintf("%s %v (want %v)", name, have, want))
	}
}
