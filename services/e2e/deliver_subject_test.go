package e2e_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chaos"
	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/poll"
)

// listener records what one service's user receives on one subject, as
// that service would subscribe to it.
type listener struct {
	name string
	mu   sync.Mutex
	got  []string
}

func (l *listener) add(m *nats.Msg) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, m.Subject+" "+string(m.Data))
}

func (l *listener) messages() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

// TestClusterDeliverSubjects: no service user and not watch can make the
// server deliver onto another service's subjects or into another
// service's streams, on a 3-node cluster configured by deploy/nats. It
// tries the ways the server publishes where a client says: a push
// consumer's deliver subject (the gateway onto auth.revoked, watch with a
// durable onto auth.keys, presence onto chat and revocations), and the
// reply subject of a JetStream API request or a pull request. Then it
// checks the services' subscriptions got only the canaries their real
// publishers sent, and the stores hold only what was put there. (Within
// one service's account a reply still lands where its requester says: a
// gateway can mislead other gateways; deploy/README.md says why.)
func TestClusterDeliverSubjects(t *testing.T) {
	nodes := chaos.StartCluster(t, binDir)
	url := nodes[0].URL()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Each service's connection, inboxes and streams as the service makes
	// them.
	conns := map[string]*nats.Conn{}
	jss := map[string]jetstream.JetStream{}
	for _, user := range []string{"gateway", "auth", "presence", "watch", "admin"} {
		conns[user] = connectAs(t, url, user, "deliver-probe-"+user, nats.CustomInboxPrefix(natsconn.InboxPrefix(user)),
			nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		js, err := jetstream.New(conns[user])
		if err != nil {
			t.Fatal(err)
		}
		jss[user] = js
	}
	// Each attempt bounded: an answer can be lost while the new cluster's
	// routes are still settling; creating again finds what was made.
	ensure := func(what string, f func(ctx context.Context) error) {
		t.Helper()
		poll.Until(t, time.Minute, func() error {
			actx, acancel := context.WithTimeout(ctx, 5*time.Second)
			defer acancel()
			if err := f(actx); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			return nil
		})
	}
	ensure("CHAT", func(ctx context.Context) error {
		_, err := chat.EnsureStream(ctx, jss["gateway"], chat.DefaultStreamOptions())
		return err
	})
	ensure("presence bucket", func(ctx context.Context) error {
		_, err := chat.EnsurePresenceBucket(ctx, jss["presence"], chat.DefaultPresenceOptions())
		return err
	})
	ensure("PRESENCE", func(ctx context.Context) error {
		_, err := chat.EnsurePresenceStream(ctx, jss["presence"], 1)
		return err
	})
	var revoked jetstream.KeyValue
	ensure("revoked bucket", func(ctx context.Context) (err error) {
		revoked, err = chat.EnsureRevokedBucket(ctx, jss["auth"], 1)
		return err
	})
	ensure("auth_limits bucket", func(ctx context.Context) error {
		_, err := chat.EnsureAuthLimitsBucket(ctx, jss["auth"], time.Minute, 1)
		return err
	})
	// Something stored in every stream a consumer could read.
	if _, err := jss["gateway"].Publish(ctx, "chat.dm.ann.bob", []byte(`{"text":"just you"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := revoked.Put(ctx, "real-token", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	presenceKV, err := jss["gateway"].KeyValue(ctx, chat.PresenceBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := presenceKV.Put(ctx, "ann.conn1", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}

	// The subjects services listen on, each subscribed as its listener.
	listeners := map[string]*listener{}
	for _, l := range []struct{ user, subject string }{
		{"gateway", chat.AuthRevokedSubject},
		{"gateway", chat.PresenceChangedSubjects},
		{"auth", chat.AuthKeysSubject},
		{"auth", chat.AuthUsersGetSubject},
		{"presence", chat.PresenceOnlineSubject},
	} {
		ls := &listener{name: l.user + " on " + l.subject}
		if _, err := conns[l.user].Subscribe(l.subject, ls.add); err != nil {
			t.Fatal(err)
		}
		if err := conns[l.user].Flush(); err != nil {
			t.Fatal(err)
		}
		listeners[l.subject] = ls
	}

	// Push consumers delivering onto other services' subjects.
	type push struct {
		user, stream, deliver string
		durable               bool
		mayCreate             bool // the user needs consumers on this stream
	}
	pushes := []push{
		{"gateway", chat.StreamName, chat.AuthRevokedSubject, false, true},
		{"gateway", chat.StreamName, chat.AuthKeysSubject, false, true},
		{"gateway", chat.StreamName, "$KV." + chat.RevokedBucket + ".forged-by-gateway", false, true},
		{"gateway", chat.StreamName, "presence.events.forged", false, true},
		{"gateway", "KV_" + chat.RevokedBucket, chat.AuthUsersGetSubject, false, true},
		{"gateway", "KV_" + chat.RevokedBucket, "$KV." + chat.AuthLimitsBucket + ".forged-by-gateway", false, true},
		{"presence", "KV_" + chat.PresenceBucket, chat.AuthRevokedSubject, false, true},
		{"presence", "KV_" + chat.PresenceBucket, "chat.room.lobby", false, true},
		{"presence", "KV_" + chat.PresenceBucket, "$KV." + chat.RevokedBucket + ".forged-by-presence", false, true},
		{"watch", chat.StreamName, chat.AuthKeysSubject, true, false},
		{"watch", chat.StreamName, chat.AuthRevokedSubject, false, false},
		{"watch", "KV_" + chat.PresenceBucket, chat.PresenceOnlineSubject, true, false},
	}
	var created []push
	for i, p := range pushes {
		cfg := jetstream.ConsumerConfig{Name: fmt.Sprintf("probe_%s_%d", p.user, i), DeliverSubject: p.deliver, AckPolicy: jetstream.AckNonePolicy,
			// Kept while the test looks at it, listened to or not.
			InactiveThreshold: 5 * time.Minute}
		if p.durable {
			cfg.Durable = cfg.Name
		}
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := jss[p.user].CreateConsumer(cctx, p.stream, cfg)
		ccancel()
		switch {
		case err == nil && !p.mayCreate:
			t.Errorf("%s created a consumer on %s delivering to %s", p.user, p.stream, p.deliver)
			created = append(created, p)
		case err == nil:
			created = append(created, p)
		case p.mayCreate:
			t.Fatalf("%s may create consumers on %s, but: %v", p.user, p.stream, err)
		}
	}

	// Requests whose reply subject is another service's subject or
	// stream: a JetStream API answer and a pull request's messages.
	forgedReplies := map[string][]string{
		"gateway":  {"$KV." + chat.RevokedBucket + ".forged-reply-gateway", "$KV." + chat.AuthLimitsBucket + ".forged-reply-gateway", "presence.events.forged"},
		"presence": {chat.AuthRevokedSubject, "chat.room.lobby", "$KV." + chat.RevokedBucket + ".forged-reply-presence"},
		"auth":     {"presence.events.forged", "chat.room.lobby", chat.PresenceOnlineSubject},
		"watch":    {chat.AuthRevokedSubject, "chat.room.lobby", "$KV." + chat.RevokedBucket + ".forged-reply-watch", "presence.events.forged"},
	}
	for user, replies := range forgedReplies {
		for _, reply := range replies {
			if err := conns[user].PublishRequest("$JS.API.INFO", reply, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	pull, err := jss["gateway"].CreateConsumer(ctx, chat.StreamName, jetstream.ConsumerConfig{Name: "probe_pull", AckPolicy: jetstream.AckNonePolicy})
	if err != nil {
		t.Fatal(err)
	}
	for _, reply := range []string{"$KV." + chat.RevokedBucket + ".forged-pull", "presence.events.forged-pull"} {
		if err := conns["gateway"].PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+chat.StreamName+"."+pull.CachedInfo().Name,
			reply, []byte(`{"batch":10,"no_wait":true}`)); err != nil {
			t.Fatal(err)
		}
	}
	for _, nc := range conns {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	// The real publishers' canaries, sent after every attempt: once each
	// listener has its canary, whatever came before it is in too.
	canaries := map[string]struct{ user, subject string }{
		chat.AuthRevokedSubject:      {"auth", chat.AuthRevokedSubject},
		chat.PresenceChangedSubjects: {"presence", "presence.events.canary"},
		chat.AuthKeysSubject:         {"gateway", chat.AuthKeysSubject},
		chat.AuthUsersGetSubject:     {"gateway", chat.AuthUsersGetSubject},
		chat.PresenceOnlineSubject:   {"gateway", chat.PresenceOnlineSubject},
	}
	for _, c := range canaries {
		if c.subject == "presence.events.canary" {
			if _, err := jss[c.user].Publish(ctx, c.subject, []byte("canary")); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := conns[c.user].Publish(c.subject, []byte("canary")); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, 30*time.Second, func() error {
		for subject, l := range listeners {
			if !slices.ContainsFunc(l.messages(), func(m string) bool { return strings.HasSuffix(m, " canary") }) {
				return fmt.Errorf("%s: no canary yet", subject)
			}
		}
		return nil
	})
	for _, l := range listeners {
		for _, m := range l.messages() {
			if !strings.HasSuffix(m, " canary") {
				t.Errorf("%s received %q: the server delivered there for another user", l.name, m)
			}
		}
	}

	// The consumers that were allowed found no one to deliver to.
	for i, p := range pushes {
		if !slices.Contains(created, p) {
			continue
		}
		// (jetstream.Consumer is for pull consumers only: ask the API.)
		var info struct {
			jetstream.ConsumerInfo
			Error *jetstream.APIError `json:"error"`
		}
		subject := fmt.Sprintf("$JS.API.CONSUMER.INFO.%s.probe_%s_%d", p.stream, p.user, i)
		if err := natsconn.RequestJSON(ctx, conns["admin"], subject, nil, &info); err != nil || info.Error != nil {
			t.Errorf("consumer of %s on %s: %v %v", p.user, p.stream, err, info.Error)
			continue
		}
		if d := info.Delivered.Consumer; d != 0 {
			t.Errorf("%s's consumer on %s delivered %d messages to %s", p.user, p.stream, d, p.deliver)
		}
	}

	// Nothing landed in a store: the revoked bucket holds its one real
	// token, the limits bucket nothing, CHAT its one message, PRESENCE
	// the canary.
	for stream, want := range map[string][]string{
		"KV_" + chat.RevokedBucket:    {"$KV." + chat.RevokedBucket + ".real-token"},
		"KV_" + chat.AuthLimitsBucket: nil,
	} {
		s, err := jss["admin"].Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(">"))
		if err != nil {
			t.Fatal(err)
		}
		var have []string
		for subject := range info.State.Subjects {
			have = append(have, subject)
		}
		if !slices.Equal(have, want) {
			t.Errorf("bucket stream %s has keys %v, want %v", stream, have, want)
		}
	}
	for stream, want := range map[string]uint64{chat.StreamName: 1, chat.PresenceStream: 1} {
		s, err := jss["admin"].Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		if n := s.CachedInfo().State.Msgs; n != want {
			t.Errorf("stream %s holds %d messages, want %d", stream, n, want)
		}
	}
}
