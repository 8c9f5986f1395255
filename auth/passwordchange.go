package main

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/natter/natter/auth/password"
	"github.com/natter/natter/auth/users"
	"github.com/natter/natter/services/token"
)

// Password change: POST /api/password checks the current password as a
// login does (the same limits: a wrong one is a failed login), the new
// one against the rules of registration, then stores the new hash,
// revokes every token of the user (revokeUser, see sessions.go) and logs
// this browser in again with a fresh token.
//
// It stores the new hash before it revokes: a login with the old
// password fails from then on, and should the revocation fail (503) the
// old sessions live on, but nobody can log in with the old password. A
// login that checked the old password just before the change and issues
// its token just after the revocation keeps its session: the change
// cannot see logins in flight.

type passwordRequest struct {
	Current string `json:"current"`
	New     string `json:"new"`
}

// changePassword replaces the user's password, revokes every token of
// theirs and logs this browser in again with a fresh token, answered as
// login answers.
func (a *api) changePassword(c *gin.Context) {
	u, tok, claims, err := a.doChangePassword(c)
	if err != nil {
		writeError(c, a.log, err)
		return
	}
	a.log.Info("password changed", "user", u.ID)
	a.setCookie(c, tok, int(a.lifetime/time.Second))
	c.JSON(http.StatusOK, gin.H{"token": tok, "expires_at": claims.ExpiresAt.UTC().Format(time.RFC3339), "user": toJSON(u)})
}

// doChangePassword checks the request (the new password against the
// rules of registration), then the current password under the login
// limits, then stores the new hash and revokes (in that order: see the
// top of this file).
func (a *api) doChangePassword(c *gin.Context) (users.User, string, *token.Claims, error) {
	claims := c.MustGet(claimsKey).(*token.Claims)
	ctx := c.Request.Context()
	u, req, err := a.passwordChangeRequest(c, claims)
	if err != nil {
		return users.User{}, "", nil, err
	}
	// Refused now rather than after the password has changed.
	if err := a.revocationRoom(ctx, u.ID, time.Now()); err != nil {
		return users.User{}, "", nil, err
	}
	if err := a.checkCurrentPassword(c, u, req.Current); err != nil {
		return users.User{}, "", nil, err
	}
	hash, err := a.hash(ctx, req.New)
	if err != nil {
		return users.User{}, "", nil, err
	}
	if err := a.users.SetPasswordHash(ctx, u.ID, hash); err != nil {
		if errors.Is(err, users.ErrNotFound) {
			return users.User{}, "", nil, ErrUnauthorized
		}
		return users.User{}, "", nil, unavailable(err)
	}
	r, err := a.revokeUser(ctx, u.ID, time.Now())
	if err != nil {
		return users.User{}, "", nil, err
	}
	tok, fresh, err := a.issueAfter(u, time.Now(), r)
	return u, tok, fresh, err
}

// passwordChangeRequest reads and checks a password change: both fields
// given, the new password within the rules of registration (its errors
// name the field "new").
func (a *api) passwordChangeRequest(c *gin.Context, claims *token.Claims) (users.User, passwordRequest, error) {
	var req passwordRequest
	if err := decodeJSON(c, &req); err != nil {
		return users.User{}, req, err
	}
	if req.Current == "" {
		return users.User{}, req, invalid("current", ruleRequired, "required")
	}
	u, err := a.currentUser(c.Request.Context(), claims)
	if err != nil {
		return users.User{}, req, err
	}
	if err := checkNewPassword(req.New, u.Account, a.common); err != nil {
		var in *inputError
		if errors.As(err, &in) {
			in.Field = "new"
		}
		return users.User{}, req, err
	}
	return u, req, nil
}

// checkCurrentPassword checks u's current password as a login does:
// counted against the login limits of the account and the client's
// address before it is hashed, a wrong one (ErrWrongPassword) kept as a
// failure, a right one clearing the account's failures.
func (a *api) checkCurrentPassword(c *gin.Context, u users.User, current string) error {
	ctx := c.Request.Context()
	addrKey, acctKey, pairKey := a.loginKeys(c, u.Account)
	if err := a.reserveLogin(ctx, addrKey, acctKey, pairKey); err != nil {
		return err
	}
	ctxHash, cancel := context.WithTimeout(ctx, a.limits.HashQueueTimeout)
	defer cancel()
	err := a.pool.Check(ctxHash, current, u.PasswordHash)
	switch {
	case err == nil:
		a.loginSucceeded(ctx, addrKey, acctKey, pairKey)
		return nil
	case errors.Is(err, password.ErrBusy):
		// Nothing was checked: the attempt is no failure.
		a.giveBack(ctx, addrKey, acctKey, pairKey)
		return err
	case !errors.Is(err, password.ErrMismatch):
		a.log.Error("stored password hash unreadable", "user", u.ID, "err", err)
	}
	return ErrWrongPassword
}
