package bridge

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/token"
)

// liveMsg is a republished lobby message as the hub receives it.
func liveMsg(b *testing.B) *nats.Msg {
	b.Helper()
	m := chat.Message{ID: "m1", From: chat.User{ID: "u1", Name: "Alice"}, To: chat.To{Room: chat.Lobby},
		Text: strings.Repeat("hello natter ", 8), TS: time.Now().UTC()}
	msg := nats.NewMsg(chat.LivePrefix + "chat.room.lobby")
	msg.Header.Set(chat.SequenceHeader, "12345")
	msg.Data = chat.Encode(m)
	return msg
}

// BenchmarkRoomFanOut measures the hub's per-message work for one room of
// N local sockets: decode once, encode once, enqueue the same bytes N
// times, to sockets that only count (queueing and writing are wsconn's,
// benchmarked there).
func BenchmarkRoomFanOut(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("sockets=%d", n), func(b *testing.B) {
			m := newMetrics(prometheus.NewRegistry())
			h := &hub{log: slog.New(slog.NewTextHandler(io.Discard, nil)), m: m, local: map[*client]struct{}{}}
			gw := &Gateway{metrics: m, limits: Limits{QueueLen: 1 << 20, QueueBytes: 1 << 40}}
			for range n {
				// A socket that counts what it is sent: the fan-out alone,
				// without queues or writes (see wsconn for those).
				c := &client{gw: gw, conn: &recorder{count: true, closing: make(chan struct{})}, claims: &token.Claims{}, state: stateLive}
				h.local[c] = struct{}{}
			}
			msg := liveMsg(b)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				h.onRoom(msg)
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// BenchmarkFrameDecode measures parsing and checking one client send.
func BenchmarkFrameDecode(b *testing.B) {
	data := []byte(`{"type":"send","id":"m-123","to":{"room":"lobby"},"text":"hello natter, how is everyone today?"}`)
	b.ReportAllocs()
	for b.Loop() {
		f, e := decodeFrame(data)
		if e != nil || checkSend(f, chat.MaxTextChars) != nil {
			b.Fatal("refused")
		}
	}
}

// BenchmarkTokenVerify measures the offline check of a socket's token:
// the first time a gateway sees it (signature verified), and again (a
// reconnect or another tab: remembered).
func BenchmarkTokenVerify(b *testing.B) {
	key, _, _ := token.LoadOrCreateKeyFile(b.TempDir()+"/k.pem", true)
	keys := token.JWKS{Keys: []token.JWK{key.PublicJWK()}}
	tok, _, _ := key.Issue("u1", "Alice", time.Now(), time.Hour)
	v := token.NewVerifier()
	if err := v.SetKeys(keys); err != nil {
		b.Fatal(err)
	}
	b.Run("first", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = v.SetKeys(keys) // forgets what it verified
			if _, err := v.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("again", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}
