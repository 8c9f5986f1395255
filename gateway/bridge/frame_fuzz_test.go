package bridge

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/natter/natter/services/chat"
)

// FuzzClientFrame feeds arbitrary bytes to the frame decoder and the send
// checks: they never panic, every refusal carries a known code and a
// message, and whatever passes is a send with a valid id, exactly one
// recipient and a non-empty text within the limit.
func FuzzClientFrame(f *testing.F) {
	for _, seed := range []string{
		`{"type":"send","id":"m1","to":{"room":"lobby"},"text":"hi"}`,
		`{"type":"send","id":"m1","to":{"user":"u1"},"text":"hi","from":{"id":"x"}}`,
		`{"type":"send","id":"a.b","to":{"room":"lobby","user":"u"},"text":" "}`,
		`{"type":5}`, `[]`, `null`, `"send"`, `{"type":"send","to":null}`, ``, `{`,
		`{"type":"send","id":"m","to":{"user":"*"},"text":"\u0000"}`,
	} {
		f.Add([]byte(seed))
	}
	codes := map[string]bool{chat.CodeBadFrame: true, chat.CodeMissingField: true, chat.CodeUnknownType: true,
		chat.CodeBadID: true, chat.CodeBadRecipient: true, chat.CodeUnknownRoom: true, chat.CodeEmptyText: true, chat.CodeTextTooLong: true}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, ferr := decodeFrame(data)
		if ferr == nil && fr.Type != chat.FrameSend {
			return // history and resume are checked where they are handled
		}
		if ferr == nil {
			ferr = checkSend(fr, 50)
		}
		if ferr != nil {
			if !codes[ferr.Code] || ferr.Message == "" || ferr.Type != chat.FrameError {
				t.Fatalf("refusal %+v", ferr)
			}
			return
		}
		if fr.Type != chat.FrameSend || chat.ValidID(fr.ID) != nil || fr.To == nil ||
			(fr.To.Room == "") == (fr.To.User == "") || (fr.To.Room != "" && fr.To.Room != chat.Lobby) ||
			strings.TrimFunc(fr.Text, unicode.IsSpace) == "" || utf8.RuneCountInString(fr.Text) > 50 {
			t.Fatalf("accepted %+v from %q", fr, data)
		}
	})
}
