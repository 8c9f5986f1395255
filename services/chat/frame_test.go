package chat

import (
	"bytes"
	"encoding/json"
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
	if want := Encode(NewMessageFrame(m, 42)); !bytes.Equal(got, want) {
		t.Fatalf("frame\n%s\nwant\n%s", got, want)
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
