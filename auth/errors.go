package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/natter/natter/auth/password"
	"github.com/natter/natter/auth/users"
)

// Errors the handlers return; errorResponse maps each to a status and code.
var (
	ErrInvalidInput    = errors.New("invalid input")
	ErrBadCredentials  = errors.New("bad credentials")
	ErrWrongPassword   = errors.New("wrong password") // a password change's current password; counts as a failed login
	ErrUnauthorized    = errors.New("unauthorized")
	ErrForbiddenOrigin = errors.New("forbidden origin") // a state-changing request from another site's page
	ErrRateLimited     = errors.New("rate limited")
	ErrUnavailable     = errors.New("unavailable")
	ErrBusy            = errors.New("busy") // too many attempts on one counter queued before this one
	ErrNotFound        = errors.New("not found")
	ErrMethod          = errors.New("method not allowed")
	ErrPanic           = errors.New("panic")
)

// Rules name the check an input error failed: the "rule" of an
// invalid_input error body, next to its "field", so the page can say what
// to fix in its own words. Every input error has one; the README lists
// them per field.
const (
	ruleRequired      = "required"        // account, name, password, ids: missing or empty (a name of only spaces, or nothing visible, too)
	ruleLength        = "length"          // account 3-32 characters, name 1-32 after trimming, password 8-128
	ruleCharset       = "charset"         // account: a character other than ASCII letters, digits, '.', '_' and '-'
	ruleUTF8          = "utf8"            // name: not valid UTF-8 (JSON decoding already replaces bad bytes: a guard for other callers)
	rulePrintable     = "printable"       // name: an unprintable character no other rule names (line separator, private use, unassigned...)
	ruleControl       = "control"         // name: a control character (newline, tab, bell...)
	ruleBidi          = "bidi"            // name: a bidirectional control (U+202A-U+202E, U+2066-U+2069, LRM, RLM, ALM)
	ruleInvisible     = "invisible"       // name: a character that shows nothing (zero-width space or joiner, soft hyphen, Hangul filler...)
	ruleAtSign        = "at_sign"         // name: '@', with which the page writes account handles
	ruleLabel         = "label"           // name: a bracketed page label, such as "(you)" or "（你）"
	ruleCommon        = "common"          // password: one of the embedded most common passwords, ignoring case
	ruleSameAsAccount = "same_as_account" // password: the account name, ignoring case
	ruleType          = "type"            // any field: not a string (a number, object, array...)
	ruleUnknownField  = "unknown_field"   // field: a name the request does not have (field is that name)
	ruleContentType   = "content_type"    // body: Content-Type is not application/json
	ruleTooLarge      = "too_large"       // body: over maxBodyBytes
	ruleJSON          = "json"            // body: not one JSON object (syntax, empty, an array, trailing data, unreadable)
	ruleCount         = "count"           // ids: more than chat.MaxUsersPerRequest
	ruleFormat        = "format"          // ids: one is not a valid user id
)

// inputError names the field at fault, the rule it broke and why; it is an
// ErrInvalidInput.
type inputError struct {
	Field, Rule, Reason string
}

func (e *inputError) Error() string        { return e.Field + ": " + e.Reason }
func (e *inputError) Is(target error) bool { return target == ErrInvalidInput }

// invalid is an input error on field breaking rule (one of the rule
// constants), with a message for people.
func invalid(field, rule, format string, args ...any) error {
	return &inputError{Field: field, Rule: rule, Reason: fmt.Sprintf(format, args...)}
}

// rateLimitError says when to come back; it is an ErrRateLimited.
type rateLimitError struct {
	RetryAfter time.Duration
}

func (e *rateLimitError) Error() string        { return "rate limited for " + e.RetryAfter.String() }
func (e *rateLimitError) Is(target error) bool { return target == ErrRateLimited }

// unavailable marks a dependency failure (MongoDB, NATS) as ErrUnavailable,
// keeping the cause for the log.
func unavailable(err error) error { return fmt.Errorf("%w: %w", ErrUnavailable, err) }

// errorBody is natter's HTTP error body.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	Rule    string `json:"rule,omitempty"` // invalid_input only: which check failed
}

// errorResponse is the one place errors become HTTP statuses and codes.
func errorResponse(err error) (int, errorDetail, time.Duration) {
	var in *inputError
	var rl *rateLimitError
	switch {
	case errors.As(err, &in):
		return http.StatusBadRequest, errorDetail{Code: "invalid_input", Message: in.Error(), Field: in.Field, Rule: in.Rule}, 0
	case errors.Is(err, users.ErrAccountTaken):
		return http.StatusConflict, errorDetail{Code: "account_taken", Message: "this account name is taken", Field: "account"}, 0
	case errors.Is(err, ErrBadCredentials):
		return http.StatusUnauthorized, errorDetail{Code: "bad_credentials", Message: "account or password is wrong"}, 0
	case errors.Is(err, ErrWrongPassword):
		return http.StatusForbidden, errorDetail{Code: "wrong_password", Message: "the current password is wrong", Field: "current"}, 0
	case errors.Is(err, ErrUnauthorized):
		return http.StatusUnauthorized, errorDetail{Code: "unauthorized", Message: "log in first"}, 0
	case errors.Is(err, ErrForbiddenOrigin):
		return http.StatusForbidden, errorDetail{Code: "forbidden_origin", Message: "this request came from a page of another origin"}, 0
	case errors.As(err, &rl):
		return http.StatusTooManyRequests, errorDetail{Code: "rate_limited", Message: "too many attempts; try again later"}, rl.RetryAfter
	case errors.Is(err, password.ErrBusy), errors.Is(err, ErrBusy):
		return http.StatusServiceUnavailable, errorDetail{Code: "busy", Message: "the server is busy; try again shortly"}, time.Second
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable, errorDetail{Code: "unavailable", Message: "a backing service is unavailable; try again shortly"}, time.Second
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound, errorDetail{Code: "not_found", Message: "no such endpoint"}, 0
	case errors.Is(err, ErrMethod):
		return http.StatusMethodNotAllowed, errorDetail{Code: "method_not_allowed", Message: "method not allowed here"}, 0
	default:
		return http.StatusInternalServerError, errorDetail{Code: "internal", Message: "internal error"}, 0
	}
}

// writeError answers err and logs what the client does not see.
func writeError(c *gin.Context, log *slog.Logger, err error) {
	status, detail, retry := errorResponse(err)
	if retry > 0 {
		c.Header("Retry-After", strconv.Itoa(int((retry+time.Second-1)/time.Second)))
	}
	switch {
	case status >= 500:
		log.Error("request failed", "path", c.FullPath(), "status", status, "err", err)
	case status == http.StatusTooManyRequests:
		log.Warn("rate limited", "path", c.FullPath(), "client", c.ClientIP())
	}
	c.AbortWithStatusJSON(status, errorBody{Error: detail})
}
