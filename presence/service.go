package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/natter/natter/services/authclient"
	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/ops"
)

// publishTimeout bounds the publish of one change.
const publishTimeout = 5 * time.Second

// service follows the presence bucket, answers presence questions and
// reports changes.
type service struct {
	log     *slog.Logger
	js      jetstream.JetStream
	tracker *tracker
	auth    *authclient.Client // user names
	loaded  *ops.Gate          // the bucket's current state is loaded

	changes     *prometheus.CounterVec
	expirations prometheus.Counter
	cleaned     prometheus.Counter
}

// newService follows a bucket whose leases live ttl without heartbeat.
func newService(log *slog.Logger, nc *nats.Conn, js jetstream.JetStream, reg prometheus.Registerer, ttl time.Duration) *service {
	s := &service{
		log: log, js: js, tracker: newTracker(pendingGrace(ttl)), auth: authclient.New(nc, authclient.Config{Timeout: namesTimeout}), loaded: ops.NewGate("state"),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_changes_total", Help: "Users coming online or going offline, as this replica saw them.",
		}, []string{"online"}),
		expirations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_expirations_total", Help: "Users gone offline because their last socket's gateway lease expired (gateway gone without goodbye).",
		}),
		cleaned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_dead_sockets_deleted_total", Help: "Socket keys of expired gateway leases this replica deleted from the bucket.",
		}),
	}
	reg.MustRegister(s.changes, s.expirations, s.cleaned,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "presence_users_online", Help: "Users with at least one socket."},
			func() float64 { u, _ := s.tracker.counts(); return float64(u) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "presence_sockets_online", Help: "Live sockets in the presence bucket (their gateway's lease holds)."},
			func() float64 { _, n := s.tracker.counts(); return float64(n) }),
	)
	return s
}

// follow applies every bucket update until ctx ends. A watch that ends
// (its consumer lost when the connection moved to another node, as the
// watchdog does from a silent one) starts again from the bucket's
// current state, whose differences from what was last reported are
// reported on loading (reconcile): ending the service instead left one
// replica fewer until something restarted it.
func (s *service) follow(ctx context.Context, kv jetstream.KeyValue) error {
	for {
		err := s.watch(ctx, kv)
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("presence watch ended; loading the state again", "err", err)
		s.tracker.reset()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(watchRetryWait):
		}
	}
}

// watchRetryWait paces the watches started again.
const watchRetryWait = time.Second

// watch applies bucket updates until the watch or ctx ends. Changes
// seen while loading the current state are that state, not news: only
// later ones are reported.
func (s *service) watch(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", chat.PresenceBucket, err)
	}
	defer func() { _ = w.Stop() }()
	live := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("presence watch ended")
			}
			if e == nil {
				live = true
				users, _ := s.tracker.counts()
				s.log.Info("presence state loaded", "users_online", users)
				s.loaded.Open()
				// Before any later change: reconcile's changes are at
				// the loaded state's revision, below every later one.
				s.reconcile(ctx)
				continue
			}
			for _, c := range s.tracker.apply(e) {
				if live {
					s.report(ctx, c)
				}
			}
		}
	}
}

// reconcileTimeout bounds reading what was last reported.
const reconcileTimeout = 10 * time.Second

// reconcile reports what changed while no replica was reporting (this
// one restarted, say, after a crash): gateways learn changes only from
// reports, and without these would show the users who came or went
// meanwhile wrongly until their periodic resync. It compares the state
// just loaded with the last change reported of each user (the PRESENCE
// stream keeps them an hour) and reports the differences at the loaded
// state's revision. A report newer than that state means another
// replica is live and reporting: nothing was missed, nothing is sent.
func (s *service) reconcile(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, reconcileTimeout)
	defer cancel()
	list, rev := s.tracker.online()
	reported, newer, err := s.lastReported(ctx, rev)
	if err != nil {
		s.log.Warn("changes while presence was down not reported; gateways resync later", "err", err)
		return
	}
	if newer {
		return
	}
	var out []change
	online := make(map[string]bool, len(list))
	for _, u := range list {
		online[u.ID] = true
		if !reported[u.ID] {
			out = append(out, change{user: u.ID, online: true, rev: rev})
		}
	}
	for id, on := range reported {
		if on && !online[id] {
			out = append(out, change{user: id, online: false, rev: rev})
		}
	}
	slices.SortFunc(out, func(a, b change) int { return strings.Compare(a.user, b.user) })
	// Names in one request for all (bounded by namesTimeout, auth may be
	// down), not one per change.
	users := make([]chat.User, len(out))
	for i, c := range out {
		users[i] = chat.User{ID: c.user}
	}
	fillNames(ctx, s.auth, users)
	for i, c := range out {
		s.changes.WithLabelValues(fmt.Sprint(c.online)).Inc()
		s.publish(ctx, c, users[i])
	}
	if len(out) > 0 {
		s.log.Info("reported the changes made while presence was down", "changes", len(out), "rev", rev)
	}
}

// lastReported is the state each user was last reported in (true:
// online), from the PRESENCE stream's last message per user, and whether
// any of them is newer than rev.
func (s *service) lastReported(ctx context.Context, rev uint64) (map[string]bool, bool, error) {
	out := map[string]bool{}
	stream, err := s.js.Stream(ctx, chat.PresenceStream)
	if err != nil {
		return nil, false, err
	}
	if stream.CachedInfo().State.Msgs == 0 {
		return out, false, nil
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{chat.PresenceEventSubjects},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return nil, false, err
	}
	// The last message of each subject, in stream order; the count is
	// bounded by the users reported within the stream's max age.
	for {
		batch, err := cons.Fetch(reportedBatch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return nil, false, err
		}
		n, pending := 0, uint64(0)
		for m := range batch.Messages() {
			n++
			var ev chat.PresenceEvent
			if json.Unmarshal(m.Data(), &ev) != nil {
				continue
			}
			if ev.Rev > rev {
				return nil, true, nil
			}
			out[ev.User.ID] = ev.Online
			if meta, err := m.Metadata(); err == nil {
				pending = meta.NumPending
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, false, err
		}
		if n == 0 || pending == 0 {
			return out, false, nil
		}
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
	}
}

// reportedBatch is how many last reports one fetch asks for.
const reportedBatch = 1000

// pendingGrace is how long a socket key may wait for its gateway's lease:
// a live gateway refreshes its lease more often than ttl, so a socket
// whose lease has not shown within two ttls has a dead gateway.
func pendingGrace(ttl time.Duration) time.Duration { return 2 * ttl }

// clean deletes, every period, the socket keys of gateways whose lease
// is gone: nobody else removes a dead gateway's keys. Every replica does
// it; a delete names the revision it saw, so a key is deleted once and
// a replica that comes second is refused, harmlessly.
func (s *service) clean(ctx context.Context, kv jetstream.KeyValue, period time.Duration) {
	ops.Every(ctx, period, func(ctx context.Context) {
		dead := s.tracker.sweep()
		for key, rev := range dead {
			err := kv.Delete(ctx, key, jetstream.LastRevision(rev))
			if err != nil && !wrongRevision(err) {
				if ctx.Err() == nil {
					s.log.Warn("presence cleanup failed; retrying next period", "keys_left", len(dead), "err", err)
				}
				return
			}
			s.tracker.deleted(key, rev)
			s.cleaned.Inc()
		}
	})
}

// wrongRevision is a delete refused because the key is no longer at the
// revision it named: deleted by another replica, or gone.
func wrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// report publishes a change on presence.events.<user>. Every replica
// reports it with the same message id (user and revision), so the PRESENCE
// stream stores it once and republishes it once to presence.changed.<user>.
func (s *service) report(ctx context.Context, c change) {
	s.changes.WithLabelValues(fmt.Sprint(c.online)).Inc()
	if c.expired {
		s.expirations.Inc()
	}
	users := []chat.User{{ID: c.user}}
	fillNames(ctx, s.auth, users)
	s.publish(ctx, c, users[0])
}

// publish stores change c of user u (its name filled) in the PRESENCE
// stream.
func (s *service) publish(ctx context.Context, c change, u chat.User) {
	ev := chat.PresenceEvent{User: u, Online: c.online, Rev: c.rev, TS: time.Now().UTC()}
	subj, err := chat.PresenceEventSubject(c.user)
	if err != nil {
		return
	}
	body, _ := json.Marshal(ev)
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	msgID := jetstream.WithMsgID(fmt.Sprintf("%s:%d", c.user, c.rev))
	for {
		_, err := s.js.Publish(ctx, subj, body, msgID)
		if err == nil {
			return
		}
		// Another replica's report of the same change is being stored (on
		// a replicated stream): ask again until it is (a duplicate, fine)
		// or has failed (then this one is stored).
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errDuplicateInProcess {
			select {
			case <-ctx.Done():
			case <-time.After(dupRetryWait):
				continue
			}
		}
		s.log.Warn("presence change not reported", "user", c.user, "online", c.online, "err", err)
		return
	}
}

// errDuplicateInProcess is JetStream's answer to a message id another
// publisher's message is being stored under right now.
const errDuplicateInProcess jetstream.ErrorCode = 10158

// dupRetryWait paces the retries of a report another replica is storing.
const dupRetryWait = 50 * time.Millisecond

// addMicro registers the presence micro service, reporting version;
// replicas share requests through micro's queue group and answer alike
// from the same bucket.
func (s *service) addMicro(nc *nats.Conn, version string) (micro.Service, error) {
	svc, err := micro.AddService(nc, micro.Config{
		Name: chat.PresenceService, Version: version,
		Description: "natter presence: who is online across every gateway",
	})
	if err != nil {
		return nil, err
	}
	err = errors.Join(
		svc.AddEndpoint("online", micro.HandlerFunc(s.online), micro.WithEndpointSubject(chat.PresenceOnlineSubject),
			micro.WithEndpointMetadata(map[string]string{"description": "everyone online", "response": "chat.PresenceList"})),
		svc.AddEndpoint("user", micro.HandlerFunc(s.user), micro.WithEndpointSubject(chat.PresenceUserSubject),
			micro.WithEndpointMetadata(map[string]string{"description": "one user's state", "request": `{"id":"..."}`, "response": "chat.PresenceUserResponse"})),
	)
	if err != nil {
		_ = svc.Stop()
		return nil, err
	}
	return svc, nil
}

func (s *service) notLoaded(r micro.Request) bool {
	if !s.loaded.IsOpen() {
		_ = natsconn.RespondError(r, http.StatusServiceUnavailable, "unavailable", "presence is loading its state; retry")
		return true
	}
	return false
}

func (s *service) online(r micro.Request) {
	if s.notLoaded(r) {
		return
	}
	list, rev := s.tracker.online()
	users := make([]chat.User, len(list))
	for i := range list {
		users[i] = list[i].User
	}
	fillNames(context.Background(), s.auth, users)
	for i := range list {
		list[i].User = users[i]
	}
	_ = r.RespondJSON(chat.PresenceList{Users: list, Rev: rev})
}

func (s *service) user(r micro.Request) {
	if s.notLoaded(r) {
		return
	}
	var req chat.PresenceUserRequest
	if err := json.Unmarshal(r.Data(), &req); err != nil || chat.ValidID(req.ID) != nil {
		_ = natsconn.RespondError(r, http.StatusBadRequest, "invalid_input", `want {"id":"<user id>"}`)
		return
	}
	online, since, sockets := s.tracker.user(req.ID)
	users := []chat.User{{ID: req.ID}}
	fillNames(context.Background(), s.auth, users)
	_ = r.RespondJSON(chat.PresenceUserResponse{User: users[0], Online: online, Since: since, Sockets: sockets})
}
