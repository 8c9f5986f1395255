package main

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"io"
	"net/http"
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

// normalizeName trims a display name and checks it: 1 to 32 printable
// characters in any script.
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
		if !unicode.IsPrint(r) {
			return "", invalid("name", rulePrintable, "must hold only printable characters (found %U)", r)
		}
	}
	return s, nil
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
