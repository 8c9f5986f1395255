package bridge

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/services/chat"
)

// What a subscription received decides what is a gap, a duplicate, or a
// late message of a gap that could not be read (a hole: delivered, and
// read again with the subject's next message).
func TestLiveSeqs(t *testing.T) {
	var s liveSeqs
	sub, other := &nats.Subscription{}, &nats.Subscription{}
	s.track(0, sub)
	steps := []struct {
		name           string
		sub            *nats.Subscription
		seq, prev      uint64
		hole           seqRange // given back before the step, if set
		wantRead       []seqRange
		wantDuplicated bool
	}{
		{name: "untracked subscription", sub: other, seq: 5, prev: 1},
		{name: "first on the subject: nothing known", sub: sub, seq: 5, prev: 1},
		{name: "next in line", sub: sub, seq: 6, prev: 5},
		{name: "the same again", sub: sub, seq: 6, prev: 5, wantDuplicated: true},
		{name: "7 and 8 missed", sub: sub, seq: 9, prev: 8, wantRead: []seqRange{{7, 8}}},
		{name: "8 late, its gap not read", sub: sub, seq: 8, prev: 7, hole: seqRange{7, 8}},
		{name: "8 again", sub: sub, seq: 8, prev: 7, wantDuplicated: true},
		{name: "an old one outside the hole", sub: sub, seq: 5, prev: 1, wantDuplicated: true},
		{name: "the next: the hole's rest read first", sub: sub, seq: 10, prev: 9, wantRead: []seqRange{{7, 7}}},
	}
	for _, st := range steps {
		if st.hole.to != 0 {
			s.hole(st.sub, "chat.room.lobby", st.hole)
		}
		read, dup := s.seen(st.sub, "chat.room.lobby", st.seq, st.prev)
		if !slices.Equal(read, st.wantRead) || dup != st.wantDuplicated {
			t.Errorf("%s: read %v, duplicate %v; want %v, %v", st.name, read, dup, st.wantRead, st.wantDuplicated)
		}
	}
	s.forget([]*nats.Subscription{sub})
	if read, dup := s.seen(sub, "chat.room.lobby", 20, 15); read != nil || dup {
		t.Errorf("after forget: read %v, duplicate %v; want nothing known", read, dup)
	}
}

// A stream that cannot be read costs the dispatcher one failed read, then
// none for gapPause: the gaps are kept as holes, delivered if their
// messages come late, and read with the next message once reads work.
func TestGapReadsPauseAfterFailure(t *testing.T) {
	reads, failing := 0, true
	h := &hub{log: slog.New(slog.NewTextHandler(io.Discard, nil)), readStored: func(_ context.Context, _ string, from uint64) (storedMsg, error) {
		reads++
		if failing {
			return storedMsg{}, errors.New("no leader")
		}
		return storedMsg{seq: from, data: []byte("{}")}, nil
	}}
	sub := &nats.Subscription{}
	h.liveSeqs.track(0, sub)
	msg := func(seq, prev string) *nats.Msg {
		return &nats.Msg{Subject: chat.LivePrefix + "chat.room.lobby", Sub: sub,
			Header: nats.Header{chat.SequenceHeader: {seq}, chat.LastSequenceHeader: {prev}}}
	}
	for _, m := range []*nats.Msg{msg("1", "0"), msg("5", "4"), msg("9", "8")} {
		if missed, deliver := h.fillGap(m); len(missed) != 0 || !deliver {
			t.Fatalf("seq %s: %d read, deliver %v; want none read, delivered", m.Header.Get(chat.SequenceHeader), len(missed), deliver)
		}
	}
	if reads != 1 {
		t.Fatalf("%d reads for two gaps with the stream failing; want 1, then a pause", reads)
	}
	// 3 came late: its gap was not read, so it is delivered.
	if _, deliver := h.fillGap(msg("3", "1")); !deliver {
		t.Fatal("a late message of an unread gap was dropped as a duplicate")
	}
	// Reads work again: the next message brings the holes' messages (2,
	// 4, 6, 7, 8) first, oldest first.
	failing, h.gapsPausedUntil = false, time.Time{}
	missed, deliver := h.fillGap(msg("10", "9"))
	var seqs []string
	for _, m := range missed {
		seqs = append(seqs, m.Header.Get(chat.SequenceHeader))
	}
	if got := strings.Join(seqs, ","); got != "2,4,6,7,8" || !deliver {
		t.Fatalf("after the pause: read %s (deliver %v), want 2,4,6,7,8 before 10", got, deliver)
	}
}
