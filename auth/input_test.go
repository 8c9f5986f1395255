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
		{"name", "bell", "a\u0007b", rulePrintable},
		{"name", "newline inside", "a\nb", rulePrintable},
		{"name", "zero-width space", "a\u200bb", rulePrintable},

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
