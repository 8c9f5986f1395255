package main

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
)

// Input limits.
const (
	// maxBodyBytes bounds a request body.
	maxBodyBytes = 16 << 10
	// Account names: letters, digits, '.', '_', '-'.
	minAccountLen, maxAccountLen = 3, 32
	// Display names, in characters after trimming.
	minNameLen, maxNameLen = 1, 32
	// Passwords, in characters.
	minPasswordLen, maxPasswordLen = 8, 128
)

//go:embed common-passwords.txt
var commonPasswordsText string

// commonPasswords is the embedded list as a set, lowercased.
func commonPasswords() map[string]bool {
	set := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(commonPasswordsText))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			set[strings.ToLower(line)] = true
		}
	}
	return set
}

// decodeJSON reads the request body strictly into dst: JSON content type,
// at most maxBodyBytes, one object, no unknown fields, every field of the
// expected type. Anything else is an input error, never a 500.
func decodeJSON(c *gin.Context, dst any) error {
	if ct := c.ContentType(); ct != "application/json" {
		return invalid("body", ruleContentType, "Content-Type must be application/json, not %q", ct)
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return invalid("body", ruleTooLarge, "larger than %d bytes", maxBodyBytes)
	}
	if err != nil {
		return invalid("body", ruleJSON, "unreadable: %v", err)
	}
	return decodeStrict(body, dst)
}

func decodeStrict(body []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var typeErr *json.UnmarshalTypeError
		var syntaxErr *json.SyntaxError
		switch {
		case errors.As(err, &typeErr) && typeErr.Field != "":
			return invalid(typeErr.Field, ruleType, "must be a %s", typeErr.Type)
		case errors.As(err, &typeErr):
			return invalid("body", ruleJSON, "must be a JSON object")
		case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
			return invalid("body", ruleJSON, "not valid JSON")
		case errors.Is(err, io.EOF):
			return invalid("body", ruleJSON, "empty")
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			if name == "" {
				return invalid("body", ruleUnknownField, `unknown field ""`)
			}
			return invalid(name, ruleUnknownField, "unknown field")
		default:
			return invalid("body", ruleJSON, "not valid JSON")
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("body", ruleJSON, "unexpected data after the JSON object")
	}
	return nil
}

// normalizeAccount checks an account name and lowercases it: accounts
// compare case-insensitively.
func normalizeAccount(s string) (string, error) {
	if s == "" {
		return "", invalid("account", ruleRequired, "required")
	}
	if n := utf8.RuneCountInString(s); n < minAccountLen || n > maxAccountLen {
		return "", invalid("account", ruleLength, "must be %d to %d characters", minAccountLen, maxAccountLen)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return "", invalid("account", ruleCharset, "may hold only letters, digits, '.', '_' and '-'")
		}
	}
	return strings.ToLower(s), nil
}

// normalizeName trims a display name and checks it: 1 to 32 characters
// in any script that show as themselves. Names are not unique, so the page
// shows each beside its account handle and its own labels ("(you)"); a
// name may not imitate either, nor hide or reorder text around it.
func normalizeName(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", invalid("name", ruleRequired, "required")
	}
	if !utf8.ValidString(s) {
		return "", invalid("name", ruleUTF8, "must be valid UTF-8")
	}
	if n := utf8.RuneCountInString(s); n < minNameLen || n > maxNameLen {
		return "", invalid("name", ruleLength, "must be %d to %d characters", minNameLen, maxNameLen)
	}
	for _, r := range s {
		if err := checkNameRune(r); err != nil {
			return "", err
		}
	}
	if !strings.ContainsFunc(s, visible) {
		return "", invalid("name", ruleRequired, "must show at least one letter, digit, punctuation mark or symbol")
	}
	if label, ok := imitatedLabel(s); ok {
		return "", invalid("name", ruleLabel, "may not hold %q: the page shows it as its own label", label)
	}
	return s, nil
}

// checkNameRune refuses a character a display name may not hold, with the
// rule it breaks.
func checkNameRune(r rune) error {
	switch {
	case unicode.Is(unicode.Cc, r):
		return invalid("name", ruleControl, "may not hold control characters (found %U)", r)
	case isBidiControl(r):
		return invalid("name", ruleBidi, "may not hold bidirectional controls (found %U)", r)
	case isInvisible(r):
		return invalid("name", ruleInvisible, "may not hold invisible characters (found %U)", r)
	case isAtSign(r):
		return invalid("name", ruleAtSign, "may not hold '@': the page writes account handles with it")
	case r == ' ' || r == '\u3000':
		return nil // spaces between words, the ideographic one of CJK names too
	case !unicode.IsPrint(r):
		return invalid("name", rulePrintable, "must hold only printable characters (found %U)", r)
	}
	return nil
}

// isBidiControl reports the characters that reorder the text around them:
// embeddings and overrides (U+202A-U+202E), isolates (U+2066-U+2069), and
// the direction marks (LRM, RLM, ALM).
func isBidiControl(r rune) bool {
	return r >= 0x202A && r <= 0x202E || r >= 0x2066 && r <= 0x2069 ||
		r == 0x200E || r == 0x200F || r == 0x061C
}

// isInvisible reports characters that show nothing: format characters
// (zero-width space, joiners, word joiner, soft hyphen, BOM, tags...),
// the other default-ignorable ones (Hangul fillers, the combining
// grapheme joiner...) and the blank braille pattern.
func isInvisible(r rune) bool {
	return unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) || r == 0x2800
}

// isAtSign reports '@' in any of its forms.
func isAtSign(r rune) bool { return r == '@' || r == 0xFF20 || r == 0xFE6B }

// visible reports a character that shows something by itself: a letter,
// digit, punctuation mark or symbol (not a space or a lone combining mark).
func visible(r rune) bool {
	return unicode.In(r, unicode.L, unicode.N, unicode.P, unicode.S)
}

// pageLabels are the words the page puts in brackets or beside names, in
// every language it speaks, as foldLabel writes them.
var pageLabels = []string{"you", "你", "您", "me", "我", "private", "私聊"}

// imitatedLabel finds a bracketed part of name, such as "(you)", "（你）" or
// "[ YOU ]", whose letters are one of the page's labels: the label, and
// whether there is one.
func imitatedLabel(name string) (string, bool) {
	rs := []rune(name)
	for i, r := range rs {
		if !isOpening(r) {
			continue
		}
		end := slices.IndexFunc(rs[i+1:], isClosing)
		if end < 0 {
			break
		}
		inner := string(rs[i+1 : i+1+end])
		if slices.Contains(pageLabels, foldLabel(inner)) {
			return string(rs[i : i+2+end]), true
		}
	}
	return "", false
}

func isOpening(r rune) bool { return unicode.In(r, unicode.Ps, unicode.Pi) || r == '<' || r == 0xFF1C }
func isClosing(r rune) bool { return unicode.In(r, unicode.Pe, unicode.Pf) || r == '>' || r == 0xFF1E }

// foldLabel keeps only the letters of s, lowercased, in their ASCII form
// where they have a full-width one or a common look-alike, so that
// "Ｙｏｕ", "y o u" and "yоu" (a Cyrillic о) all read "you".
func foldLabel(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 0xFF01 && r <= 0xFF5E {
			r -= 0xFEE0 // full-width ASCII
		}
		if l, ok := lookAlikes[r]; ok {
			r = l
		}
		if unicode.IsLetter(r) {
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// lookAlikes maps Cyrillic, Greek and Armenian letters that look like the
// Latin letters of the page's labels to those letters.
var lookAlikes = map[rune]rune{
	'у': 'y', 'У': 'y', 'ү': 'y', 'Ү': 'y', 'γ': 'y', 'ỿ': 'y',
	'о': 'o', 'О': 'o', 'ο': 'o', 'Ο': 'o', 'օ': 'o', 'σ': 'o',
	'υ': 'u', 'ս': 'u', 'μ': 'u',
	'м': 'm', 'М': 'm', 'Μ': 'm',
	'е': 'e', 'Е': 'e', 'ε': 'e', 'Ε': 'e',
	'р': 'p', 'Р': 'p', 'ρ': 'p', 'Ρ': 'p',
	'і': 'i', 'І': 'i', 'ι': 'i', 'Ι': 'i',
	'а': 'a', 'А': 'a', 'α': 'a', 'Α': 'a',
	'т': 't', 'Т': 't', 'τ': 't', 'Τ': 't',
	'ν': 'v', 'Ѵ': 'v', 'ѵ': 'v',
}

// checkNewPassword applies the password rules of registration.
func checkNewPassword(pw, account string, common map[string]bool) error {
	if pw == "" {
		return invalid("password", ruleRequired, "required")
	}
	if n := utf8.RuneCountInString(pw); n < minPasswordLen || n > maxPasswordLen {
		return invalid("password", ruleLength, "must be %d to %d characters", minPasswordLen, maxPasswordLen)
	}
	lower := strings.ToLower(pw)
	if common[lower] {
		return invalid("password", ruleCommon, "is one of the most common passwords; choose another")
	}
	if lower == account {
		return invalid("password", ruleSameAsAccount, "must differ from the account name")
	}
	return nil
}
