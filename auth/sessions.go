package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/auth/users"
	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/token"
)

// Session control: "log out everywhere" and a password change revoke
// every token of the user at once, on every gateway. Tokens are not
// listed anywhere, so the revocation is a moment rather than a list: the
// revoked bucket's key user.<id> holds a chat.Revocation whose
// IssuedThrough is a second, and every token of the user with an iat at
// or before it is revoked (chat.Revocation.RevokesIssuedAt), here in
// tokenClaims and by every gateway, which watch the bucket.
//
// A token's iat is in whole seconds, so a login in the same second as the
// revocation would carry the same iat as the tokens it revokes. Auth
// therefore issues a user's tokens with an iat after their revocation
// (issue): the second after it when need be, up to a second ahead of the
// clock, which verifiers accept (they allow an iat up to token.Leeway
// ahead). A later revocation must cover those tokens too, so it names
// the second after the stored one when that is not already past
// (userRevocation). Each "log out everywhere" within the second after
// the last thus moves the revocation a second ahead of the clock; past
// maxRevocationLead another is refused (429, Retry-After) until the
// clock catches up, which keeps every iat auth issues within
// maxRevocationLead plus a second of its clock, well inside
// token.Leeway. The revocation never moves back, whatever an auth
// instance's clock says; auth instances' and verifiers' clocks need to
// agree to within token.Leeway less that lead.
//
// The key lives until the last token it revokes has expired (plus
// token.Leeway, as verifiers allow): IssuedThrough plus TOKEN_LIFETIME.
// Shortening TOKEN_LIFETIME is safe; lengthening it leaves tokens issued
// before the change and revoked after it valid for the difference once
// the key expires.
//
// maxRevocationLead is how far ahead of the clock a user's revocation
// may run (repeated "log out everywhere" within a second: see above);
// past it another is refused with 429 until the clock catches up.
const maxRevocationLead = 10 * time.Second

// maxRevokeAttempts bounds revokeUser's compare-and-set rounds, each lost
// to another revocation of the same user written meanwhile.
const maxRevokeAttempts = 5

// issuedAt is a token's iat; a token without one counts as issued at the
// zero time, before any revocation of its user.
func issuedAt(c *token.Claims) time.Time {
	if c.IssuedAt == nil {
		return time.Time{}
	}
	return c.IssuedAt.Time
}

// userRevocation is user's revocation of every token issued up to a
// second (the zero Revocation when there is none) and its key's revision
// (0 when there is none), for a compare-and-set.
func (a *api) userRevocation(ctx context.Context, user string) (chat.Revocation, uint64, error) {
	key, err := chat.RevokedUserKey(user)
	if err != nil {
		return chat.Revocation{}, 0, err
	}
	e, err := a.revoked.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return chat.Revocation{}, 0, nil
	case err != nil:
		return chat.Revocation{}, 0, unavailable(fmt.Errorf("revocation check: %w", err))
	}
	var r chat.Revocation
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return chat.Revocation{}, 0, fmt.Errorf("revocation %s: %w", key, err)
	}
	return r, e.Revision(), nil
}

// revokeUser revokes every token of user issued up to now, in whole
// seconds (or up to the later second a stored revocation names), and
// announces it on auth.revoked.
func (a *api) revokeUser(ctx context.Context, user string, now time.Time) (chat.Revocation, error) {
	for range maxRevokeAttempts {
		old, rev, err := a.userRevocation(ctx, user)
		if err != nil {
			return chat.Revocation{}, err
		}
		r := userRevocation(user, now, old, a.lifetime)
		err = a.putUserRevocation(ctx, r, rev)
		if casConflict(err) {
			continue
		}
		if err != nil {
			return chat.Revocation{}, unavailable(fmt.Errorf("record revocation: %w", err))
		}
		a.announce(r)
		return r, nil
	}
	return chat.Revocation{}, fmt.Errorf("%w: revocations of %s keep changing", ErrBusy, user)
}

// userRevocation is the revocation of every token of user issued so far:
// up to now's second, or, when old (the stored one) is at that second or
// later, the second after old's, which tokens issued since old may carry
// (see issueAfter).
func userRevocation(user string, now time.Time, old chat.Revocation, lifetime time.Duration) chat.Revocation {
	through := now.UTC().Truncate(time.Second)
	if !old.IssuedThrough.IsZero() && !old.IssuedThrough.Before(through) {
		through = old.IssuedThrough.UTC().Add(time.Second)
	}
	return chat.Revocation{User: user, IssuedThrough: through, ExpiresAt: through.Add(lifetime)}
}

// revocationRoom refuses (429) a revocation of user's tokens while their
// stored one runs more than maxRevocationLead ahead of now.
func (a *api) revocationRoom(ctx context.Context, user string, now time.Time) error {
	r, _, err := a.userRevocation(ctx, user)
	if err != nil {
		return err
	}
	return leadLimit(r, now)
}

// leadLimit is the 429 of a revocation r that runs more than
// maxRevocationLead ahead of now.
func leadLimit(r chat.Revocation, now time.Time) error {
	if ahead := r.IssuedThrough.Sub(now); ahead > maxRevocationLead {
		return &rateLimitError{RetryAfter: ahead - maxRevocationLead}
	}
	return nil
}

// putUserRevocation stores r under its user's key if the key is still at
// revision rev (0: no key), to expire once the tokens it revokes have.
func (a *api) putUserRevocation(ctx context.Context, r chat.Revocation, rev uint64) error {
	key, err := chat.RevokedUserKey(r.User)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(r)
	ttl := max(time.Until(r.ExpiresAt)+token.Leeway, time.Second)
	if rev == 0 {
		_, err = a.revoked.Create(ctx, key, body, jetstream.KeyTTL(ttl))
		return err
	}
	// KeyValue.Update sets no TTL: publish as it does, with one.
	m := &nats.Msg{Subject: "$KV." + chat.RevokedBucket + "." + key, Data: body}
	_, err = a.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
	return err
}

// casConflict reports a compare-and-set lost to another write of the key
// (10164 on replicated streams).
func casConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// announce publishes r on auth.revoked, so gateways close its sockets at
// once; the stored record makes it stick should the event be lost.
func (a *api) announce(r chat.Revocation) {
	body, _ := json.Marshal(r)
	if err := a.nc.Publish(chat.AuthRevokedSubject, body); err != nil {
		a.log.Warn("revocation event not published", "err", err)
	}
}

// issue signs a token for u, with an iat after u's revocation of every
// token, if there is one (see the top of this file).
func (a *api) issue(ctx context.Context, u users.User, now time.Time) (string, *token.Claims, error) {
	r, _, err := a.userRevocation(ctx, u.ID)
	if err != nil {
		return "", nil, err
	}
	return a.issueAfter(u, now, r)
}

// issueAfter signs a token for u issued at now, or the second after r's
// when r revokes tokens issued at now.
func (a *api) issueAfter(u users.User, now time.Time, r chat.Revocation) (string, *token.Claims, error) {
	if r.RevokesIssuedAt(now.Truncate(time.Second)) {
		now = r.IssuedThrough.Add(time.Second)
	}
	return a.key.IssueAccount(u.ID, u.Account, u.Name, now, a.lifetime)
}

// logoutAll revokes every token of the user, this one included, and
// clears this browser's cookie. Like logout it takes "{}" as its body.
func (a *api) logoutAll(c *gin.Context) {
	if err := decodeJSON(c, &struct{}{}); err != nil {
		writeError(c, a.log, err)
		return
	}
	claims := c.MustGet(claimsKey).(*token.Claims)
	err := a.revocationRoom(c.Request.Context(), claims.Subject, time.Now())
	var r chat.Revocation
	if err == nil {
		r, err = a.revokeUser(c.Request.Context(), claims.Subject, time.Now())
	}
	if err != nil {
		writeError(c, a.log, err)
		return
	}
	a.setCookie(c, "", -1)
	a.log.Info("logged out everywhere", "user", claims.Subject)
	c.JSON(http.StatusOK, gin.H{"revoked_through": r.IssuedThrough.Format(time.RFC3339)})
}
