package chat

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// The frame made from stored bytes is exactly the frame Encode makes from
// the decoded message; anything not stored by a gateway is refused.
func TestMessageFrameBytes(t *testing.T) {
	m := Message{ID: "m1", From: User{ID: "u1", Name: "佩吉 \"q\" <b>"}, To: To{User: "u2"}, Text: "line one\nline two\t</script>", TS: time.Date(2026, 11, 26, 1, 2, 3, 456, time.UTC)}
	got, err := MessageFrameBytes(Encode(m), 42)
	if err != nil {
		t.Fatal(err)
	}
	var frame, want MessageFrame
	if err := json.Unmarshal(got, &frame); err != nil {
		t.Fatalf("frame %s: %v", got, err)
	}
	if err := json.Unmarshal(Encode(NewMessageFrame(m, 42)), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(frame, want) || bytes.IndexByte(got, '\n') >= 0 {
		t.Fatalf("frame %s\ndecodes to %+v\nwant %+v", got, frame, want)
	}
	// Stored bytes carrying their own "type" or "seq" do not win.
	forged, err := MessageFrameBytes([]byte(`{"id":"x","type":"hello","seq":1000000000000000}`), 7)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Type string `json:"type"`
		Seq  uint64 `json:"seq"`
	}
	if err := json.Unmarshal(forged, &f); err != nil || f.Type != FrameMessage || f.Seq != 7 {
		t.Fatalf("forged %s decodes to %+v %v, want a message with seq 7", forged, f, err)
	}
	for _, bad := range []string{
		``, `{}`, `not json`, `{"id":"m1"`, `{"id":"m1"}` + "\n" + `{"type":"message"}`,
		`{"type":"message","id":"m1"}`, `{"id":"m1","text":"a` + "\n" + `b"}`,
	} {
		if b, err := MessageFrameBytes([]byte(bad), 1); err == nil {
			t.Errorf("MessageFrameBytes(%q) = %s, want an error", bad, b)
		}
	}
}

func BenchmarkMessageFrame(b *testing.B) {
	m := Encode(Message{ID: "m1", From: User{ID: "u1", Name: "Alice"}, To: To{Room: Lobby}, Text: "hello natter, hello natter, hello natter", TS: time.Now().UTC()})
	b.Run("splice", func(b *testing.B) {
		for b.Loop() {
			if _, err := MessageFrameBytes(m, 12345); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode-encode", func(b *testing.B) {
		for b.Loop() {
			var msg Message
			if err := json.Unmarshal(m, &msg); err != nil {
				b.Fatal(err)
			}
			Encode(NewMessageFrame(msg, 12345))
		}
	})
}

// A stored message costs about its own size: '<' and '&' are not turned
// into six bytes each, and the object stays on one line whatever the text.
func TestEncodeStoresTextAsItIs(t *testing.T) {
	text := string(bytes.Repeat([]byte("<"), 4000)) + "\n&>\u2028\u2029"
	b := Encode(Message{ID: "m1", From: User{ID: "u1", Name: "A"}, To: To{Room: "lobby"}, Text: text, TS: time.Now()})
	if len(b) > 4200 {
		t.Fatalf("a 4,000-character text is stored in %d bytes", len(b))
	}
	if bytes.ContainsAny(b, "\n\r") || bytes.Contains(b, []byte("\u2028")) || bytes.Contains(b, []byte("\u2029")) {
		t.Fatalf("stored message spans lines: %q", b[len(b)-60:])
	}
	var m Message
	if err := json.Unmarshal(b, &m); err != nil || m.Text != text {
		t.Fatalf("round trip: %v, text equal %v", err, m.Text == text)
	}
}
