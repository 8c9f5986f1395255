package chat_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natstest"
)

func TestEnsureStreamIdempotent(t *testing.T) {
	ns := natstest.Start(t)
	js := natstest.JetStream(t, ns.URL())
	ctx := context.Background()
	o := chat.DefaultStreamOptions()

	// Services starting at once all succeed, and one stream results.
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 5 {
		wg.Go(func() {
			_, err := chat.EnsureStream(ctx, js, o)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent EnsureStream: %v", err)
		}
	}
	s, err := chat.EnsureStream(ctx, js, o)
	if err != nil {
		t.Fatalf("EnsureStream on existing stream: %v", err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Name != "CHAT" || cfg.MaxAge != o.Retention || cfg.Duplicates != o.DedupeWindow {
		t.Errorf("stream config = %+v", cfg)
	}
	// The stream takes the contract's subjects.
	subj, _ := chat.DMSubject("b", "a")
	ack, err := js.Publish(ctx, subj, []byte(`{}`))
	if err != nil || ack.Stream != "CHAT" {
		t.Fatalf("publish to %s: %v %+v", subj, err, ack)
	}
}

func TestEnsureStreamConflict(t *testing.T) {
	ns := natstest.Start(t)
	js := natstest.JetStream(t, ns.URL())
	ctx := context.Background()
	if _, err := chat.EnsureStream(ctx, js, chat.DefaultStreamOptions()); err != nil {
		t.Fatal(err)
	}
	o := chat.DefaultStreamOptions()
	o.Retention = time.Hour
	_, err := chat.EnsureStream(ctx, js, o)
	if !errors.Is(err, chat.ErrConfigConflict) {
		t.Fatalf("EnsureStream with other retention: %v, want ErrConfigConflict", err)
	}
	for _, want := range []string{"stream CHAT", "max age 720h0m0s (want 1h0m0s)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestEnsurePresenceBucket(t *testing.T) {
	ns := natstest.Start(t)
	js := natstest.JetStream(t, ns.URL())
	ctx := context.Background()
	o := chat.DefaultPresenceOptions()
	for i := range 2 {
		kv, err := chat.EnsurePresenceBucket(ctx, js, o)
		if err != nil {
			t.Fatalf("EnsurePresenceBucket #%d: %v", i+1, err)
		}
		if kv.Bucket() != "presence" {
			t.Fatalf("bucket = %q", kv.Bucket())
		}
	}
	o.TTL = 3 * time.Second
	_, err := chat.EnsurePresenceBucket(ctx, js, o)
	if !errors.Is(err, chat.ErrConfigConflict) || !strings.Contains(err.Error(), "ttl 12.5s (want 3s)") {
		t.Fatalf("EnsurePresenceBucket with other TTL: %v, want a conflict naming the ttl", err)
	}
}

func TestPresenceEntryExpires(t *testing.T) {
	// The bucket's TTL is what removes a dead gateway's lease: an entry
	// not refreshed disappears, and a watcher is told.
	ns := natstest.Start(t)
	js := natstest.JetStream(t, ns.URL())
	ctx := context.Background()
	kv, err := chat.EnsurePresenceBucket(ctx, js, chat.PresenceOptions{TTL: time.Second, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := chat.PresenceKey("u1", "gw1", "c1")
	w, err := kv.Watch(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if _, err := kv.Put(ctx, key, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	var sawPut bool
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				continue // end of initial values
			}
			switch e.Operation() {
			case jetstream.KeyValuePut:
				sawPut = true
			default:
				if !sawPut {
					t.Fatalf("removal before put: %v", e.Operation())
				}
				if _, err := kv.Get(ctx, key); err == nil {
					t.Fatal("key still readable after its expiry marker")
				}
				return
			}
		case <-deadline:
			t.Fatal("no expiry marker within 10s of a 1s TTL")
		}
	}
}

func TestStoredMessagesRepublishedWithSequence(t *testing.T) {
	ns := natstest.Start(t)
	js := natstest.JetStream(t, ns.URL())
	ctx := context.Background()
	if _, err := chat.EnsureStream(ctx, js, chat.DefaultStreamOptions()); err != nil {
		t.Fatal(err)
	}
	nc := natstest.Connect(t, ns.URL())
	sub, err := nc.SubscribeSync(chat.LivePrefix + chat.RoomSubjects)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil { // the server has the subscription
		t.Fatal(err)
	}
	subj, _ := chat.RoomSubject(chat.Lobby)
	ack, err := js.Publish(ctx, subj, []byte(`{"text":"hi"}`), jetstream.WithMsgID("u1-m1"))
	if err != nil {
		t.Fatal(err)
	}
	// A retry is not stored again, so not republished again.
	dup, err := js.Publish(ctx, subj, []byte(`{"text":"hi"}`), jetstream.WithMsgID("u1-m1"))
	if err != nil || !dup.Duplicate || dup.Sequence != ack.Sequence {
		t.Fatalf("retry: %+v %v, want a duplicate with seq %d", dup, err, ack.Sequence)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "live.chat.room.lobby" || m.Header.Get(chat.SequenceHeader) != fmt.Sprint(ack.Sequence) || string(m.Data) != `{"text":"hi"}` {
		t.Fatalf("republished %s %v %s", m.Subject, m.Header, m.Data)
	}
	if m, err := sub.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("duplicate republished: %s", m.Data)
	}
}

// CHAT_MAX_BYTES: past the cap the oldest messages go and sends go on;
// a stream made before the cap existed gets it; another cap conflicts.
func TestStreamSizeCap(t *testing.T) {
	ns := natstest.Start(t)
	js := natstest.JetStream(t, ns.URL())
	ctx := context.Background()

	// A stream as an earlier version made it, without a cap.
	old := chat.StreamConfig(chat.DefaultStreamOptions())
	old.MaxBytes = -1
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	o := chat.DefaultStreamOptions()
	o.MaxBytes = 64 << 10
	s, err := chat.EnsureStream(ctx, js, o)
	if err != nil {
		t.Fatalf("EnsureStream on a stream without a cap: %v", err)
	}
	if got := s.CachedInfo().Config.MaxBytes; got != o.MaxBytes {
		t.Fatalf("max bytes = %d, want %d", got, o.MaxBytes)
	}
	// 200 messages of 1 KB into 64 KiB: every send stored, the stream
	// at most its cap, the newest kept.
	subj, _ := chat.RoomSubject(chat.Lobby)
	var last uint64
	for i := range 200 {
		ack, err := js.Publish(ctx, subj, []byte(fmt.Sprintf(`{"id":"m%d","text":"%s"}`, i, strings.Repeat("x", 1000))))
		if err != nil {
			t.Fatalf("send %d into a full stream: %v", i, err)
		}
		last = ack.Sequence
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Bytes > uint64(o.MaxBytes) || info.State.LastSeq != last || info.State.FirstSeq == 1 {
		t.Fatalf("stream state %+v: want at most %d bytes, the newest kept and the oldest gone", info.State, o.MaxBytes)
	}
	// Another cap is a conflict, as for any setting.
	o.MaxBytes = 128 << 10
	if _, err := chat.EnsureStream(ctx, js, o); !errors.Is(err, chat.ErrConfigConflict) || !strings.Contains(err.Error(), "max bytes") {
		t.Fatalf("EnsureStream with another cap: %v, want a conflict naming max bytes", err)
	}
}
