package bridge

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/services/chat"
)

// What a subscription received decides what is a gap, a duplicate, or a
// late message of a gap that could not be read (delivered).
func TestLiveSeqs(t *testing.T) {
	var s liveSeqs
	sub, other := &nats.Subscription{}, &nats.Subscription{}
	s.track(sub)
	steps := []struct {
		name           string
		sub            *nats.Subscription
		seq, prev      uint64
		hole           [2]uint64 // recorded before the step, if set
		wantFrom       uint64
		wantDuplicated bool
	}{
		{name: "untracked subscription", sub: other, seq: 5, prev: 1},
		{name: "first on the subject: nothing known", sub: sub, seq: 5, prev: 1},
		{name: "next in line", sub: sub, seq: 6, prev: 5},
		{name: "the same again", sub: sub, seq: 6, prev: 5, wantDuplicated: true},
		{name: "7 and 8 missed", sub: sub, seq: 9, prev: 8, wantFrom: 7},
		{name: "8 late, its gap not read", sub: sub, seq: 8, prev: 7, hole: [2]uint64{7, 8}},
		{name: "an old one outside the hole", sub: sub, seq: 5, prev: 1, wantDuplicated: true},
	}
	for _, st := range steps {
		if st.hole[1] != 0 {
			s.hole(st.sub, "chat.room.lobby", st.hole[0], st.hole[1])
		}
		from, dup := s.seen(st.sub, "chat.room.lobby", st.seq, st.prev)
		if from != st.wantFrom || dup != st.wantDuplicated {
			t.Errorf("%s: from %d, duplicate %v; want %d, %v", st.name, from, dup, st.wantFrom, st.wantDuplicated)
		}
	}
	s.forget([]*nats.Subscription{sub})
	if from, dup := s.seen(sub, "chat.room.lobby", 20, 15); from != 0 || dup {
		t.Errorf("after forget: from %d, duplicate %v; want nothing known", from, dup)
	}
}

// A stream that cannot be read costs the dispatcher one failed read, then
// none for gapPause: the gaps are left as holes.
func TestGapReadsPauseAfterFailure(t *testing.T) {
	reads := 0
	h := &hub{log: slog.New(slog.NewTextHandler(io.Discard, nil)), readStored: func(context.Context, string, uint64) (storedMsg, error) {
		reads++
		return storedMsg{}, errors.New("no leader")
	}}
	sub := &nats.Subscription{}
	h.liveSeqs.track(sub)
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
}
