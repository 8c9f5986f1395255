package main

import (
	"errors"
	"strings"
	"testing"
)

// TestInputRules checks that every rule of the account, name and password
// fields is reported, with its field, and that inputs on the edges pass.
func TestInputRules(t *testing.T) {
	common := commonPasswords()
	check := map[string]func(in string) error{
		"account": func(in string) error { _, err := normalizeAccount(in); return err },
		"name":    func(in string) error { _, err := normalizeName(in); return err },
		// Passwords are checked against the account "bobbybobby".
		"password": func(in string) error { return checkNewPassword(in, "bobbybobby", common) },
	}
	tests := []struct {
		field, name, in string
		rule            string // "" when the input is accepted
	}{
		{"account", "empty", "", ruleRequired},
		{"account", "too short", "ab", ruleLength},
		{"account", "too long", strings.Repeat("a", maxAccountLen+1), ruleLength},
		{"account", "shortest", "abc", ""},
		{"account", "longest", strings.Repeat("a", maxAccountLen), ""},
		{"account", "space", "a b c", ruleCharset},
		{"account", "dollar", "$where", ruleCharset},
		{"account", "non-ASCII letter", "小明小明", ruleCharset},
		{"account", "every allowed kind", "Al.i_c-e9", ""},

		{"name", "empty", "", ruleRequired},
		{"name", "spaces only", " \t ", ruleRequired},
		{"name", "invalid UTF-8", "a\xffb", ruleUTF8},
		{"name", "too long", strings.Repeat("x", maxNameLen+1), ruleLength},
		{"name", "longest, in Chinese", strings.Repeat("名", maxNameLen), ""},
		{"name", "one character", "A", ""},
		{"name", "bell", "a\u0007b", ruleControl},
		{"name", "newline inside", "a\nb", ruleControl},
		{"name", "escape", "a\x1b[31mb", ruleControl},
		{"name", "DEL", "a\x7fb", ruleControl},
		{"name", "C1 control", "a\u0085b", ruleControl},
		{"name", "right-to-left override", "Bob\u202Eecila", ruleBidi},
		{"name", "left-to-right embedding", "\u202ABob", ruleBidi},
		{"name", "pop directional formatting", "Bob\u202C", ruleBidi},
		{"name", "first strong isolate", "Bob\u2068x", ruleBidi},
		{"name", "pop directional isolate", "Bob\u2069", ruleBidi},
		{"name", "right-to-left mark", "Bob\u200F", ruleBidi},
		{"name", "zero-width space", "a\u200bb", ruleInvisible},
		{"name", "zero-width joiner", "a\u200db", ruleInvisible},
		{"name", "zero-width non-joiner", "a\u200cb", ruleInvisible},
		{"name", "word joiner", "Al\u2060ice", ruleInvisible},
		{"name", "byte order mark", "\ufeffAlice", ruleInvisible},
		{"name", "soft hyphen", "Al\u00adice", ruleInvisible},
		{"name", "Hangul filler", "\u3164", ruleInvisible},
		{"name", "combining grapheme joiner", "A\u034flice", ruleInvisible},
		{"name", "blank braille pattern", "Alice\u2800", ruleInvisible},
		{"name", "tag character", "Alice\U000E0041", ruleInvisible},
		{"name", "only an ideographic space", "\u3000", ruleRequired},
		{"name", "only no-break spaces", "\u00a0\u00a0", ruleRequired},
		{"name", "only a combining mark", "\u0301", ruleRequired},
		{"name", "line separator", "a\u2028b", rulePrintable},
		{"name", "private use", "a\ue000b", rulePrintable},
		{"name", "no-break space inside", "a\u00a0b", rulePrintable},
		{"name", "(you)", "Bob (you)", ruleLabel},
		{"name", "(you) alone", "(you)", ruleLabel},
		{"name", "(YOU), other case", "Bob (YOU)", ruleLabel},
		{"name", "( you ), spaced", "Bob ( you )", ruleLabel},
		{"name", "(y o u), letters spaced", "Bob (y o u)", ruleLabel},
		{"name", "(you) in full-width letters", "Bob (ｙｏｕ)", ruleLabel},
		{"name", "(yоu) with a Cyrillic о", "Bob (y\u043eu)", ruleLabel},
		{"name", "[you]", "Bob [you]", ruleLabel},
		{"name", "{you}", "Bob {you}", ruleLabel},
		{"name", "<you>", "Bob <you>", ruleLabel},
		{"name", "(you], mismatched", "Bob (you]", ruleLabel},
		{"name", "(you) in the middle", "Bob (you) Lee", ruleLabel},
		{"name", "(me)", "Bob (me)", ruleLabel},
		{"name", "(private)", "Bob (private)", ruleLabel},
		{"name", "(你) in ASCII brackets", "小明(你)", ruleLabel},
		{"name", "（你） in full-width brackets", "小明（你）", ruleLabel},
		{"name", "【你】", "小明【你】", ruleLabel},
		{"name", "「您」", "小明「您」", ruleLabel},
		{"name", "(私聊)", "小明(私聊)", ruleLabel},
		{"name", "at sign", "Alice @alice", ruleAtSign},
		{"name", "full-width at sign", "Alice ＠alice", ruleAtSign},
		{"name", "small at sign", "Alice \ufe6balice", ruleAtSign},

		// Names real people use.
		{"name", "accents", "José Ñúñez", ""},
		{"name", "apostrophe", "Seán O'Brien", ""},
		{"name", "typographic apostrophe", "D’Angelo", ""},
		{"name", "hyphen", "Anne-Marie", ""},
		{"name", "Chinese", "小明", ""},
		{"name", "Japanese, ideographic space", "山田\u3000太郎", ""},
		{"name", "Korean", "김민준", ""},
		{"name", "Arabic", "محمد", ""},
		{"name", "Hebrew", "דוד לוי", ""},
		{"name", "Devanagari, combining marks", "अनुष्का", ""},
		{"name", "Cyrillic", "Юлия", ""},
		{"name", "Greek", "Γιώργος", ""},
		{"name", "emoji with a variation selector", "Sam ❤\ufe0f", ""},
		{"name", "digits and a dot", "J. Smith 2nd", ""},
		{"name", "pronouns in brackets", "Bob (he/him)", ""},
		{"name", "nickname in brackets", "Robert (Bob)", ""},
		{"name", "the word you, unbracketed", "You Li", ""},
		{"name", "你 unbracketed", "你好", ""},
		{"name", "brackets around a longer word", "Bob (young)", ""},
		{"name", "an opening bracket only", "Bob (you", ""},

		{"password", "empty", "", ruleRequired},
		{"password", "too short", strings.Repeat("x", minPasswordLen-1), ruleLength},
		{"password", "too long", strings.Repeat("x", maxPasswordLen+1), ruleLength},
		{"password", "shortest", "kq3-vz8w", ""},
		{"password", "common", "Password123", ruleCommon},
		{"password", "the account, other case", "BobbyBobby", ruleSameAsAccount},
		{"password", "good", goodPW, ""},
	}
	for _, tt := range tests {
		t.Run(tt.field+"/"+tt.name, func(t *testing.T) {
			err := check[tt.field](tt.in)
			if tt.rule == "" {
				if err != nil {
					t.Fatalf("%q refused: %v", tt.in, err)
				}
				return
			}
			var in *inputError
			if !errors.As(err, &in) || in.Field != tt.field || in.Rule != tt.rule || in.Reason == "" {
				t.Fatalf("%q: got %#v, want an input error on %s breaking %q", tt.in, err, tt.field, tt.rule)
			}
			status, body, _ := errorResponse(err)
			if status != 400 || body.Code != "invalid_input" || body.Field != tt.field || body.Rule != tt.rule {
				t.Fatalf("%q answers %d %+v", tt.in, status, body)
			}
		})
	}
}

func TestLimitAddr(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"::1", "::/64"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := limitAddr(tt.in); got != tt.want {
			t.Errorf("limitAddr(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseProxies(t *testing.T) {
	tests := []struct {
		in, want string // want: the prefixes joined by ",", or "error"
	}{
		{"", ""},
		{" , ", ""},
		{"127.0.0.1", "127.0.0.1/32"},
		{"127.0.0.1, ::1", "127.0.0.1/32,::1/128"},
		{"10.1.2.3/8,fd00::/8", "10.0.0.0/8,fd00::/8"},
		{"lb.local", "error"},
		{"10.0.0.0/33", "error"},
		{"fe80::1%eth0", "error"},
	}
	for _, tt := range tests {
		got, err := parseProxies(tt.in)
		s := make([]string, len(got))
		for i, p := range got {
			s[i] = p.String()
		}
		if (err != nil) != (tt.want == "error") || err == nil && strings.Join(s, ",") != tt.want {
			t.Errorf("parseProxies(%q) = %v, %v; want %s", tt.in, s, err, tt.want)
		}
	}
}
