package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/natter/natter/auth/limits"
	"github.com/natter/natter/auth/password"
	"github.com/natter/natter/auth/users"
	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/ops"
	"github.com/natter/natter/services/token"
	"github.com/natter/natter/services/usercache"
)

// giveBackTimeout bounds taking back an attempt that was no failure, done
// even when the client has gone.
const giveBackTimeout = 5 * time.Second

// Limits are the abuse limits, each a flag.
type Limits struct {
	Window               time.Duration // counts cover failures since the last quiet window
	LoginPerAccount      int           // failed logins per account per window
	LoginPerAddress      int           // failed logins per client address per window
	RegistrationsPerAddr int           // registrations per client address per window
	HashQueueTimeout     time.Duration // longest wait for a password hashing slot
}

// api holds what the handlers need.
type api struct {
	log      *slog.Logger
	users    *users.Store
	pool     *password.Pool
	key      token.Key
	verifier *token.Verifier
	nc       *nats.Conn
	lifetime time.Duration
	limits   Limits
	secure   bool           // Secure cookies (behind TLS)
	proxies  []netip.Prefix // TRUSTED_PROXIES: their X-Forwarded-* headers are believed
	common   map[string]bool

	public *usercache.Cache // users found, as lookups show them

	// Set by setup before ready opens; handlers read them only after.
	ready    *ops.Gate
	js       jetstream.JetStream
	revoked  jetstream.KeyValue
	counters *limits.Counters

	logins        *prometheus.CounterVec
	registrations *prometheus.CounterVec
}

// userJSON is a user as the API shows it to its owner.
type userJSON struct {
	ID      string `json:"id"`
	Account string `json:"account"`
	Name    string `json:"name"`
}

func toJSON(u users.User) userJSON { return userJSON{ID: u.ID, Account: u.Account, Name: u.Name} }

// up fails with ErrUnavailable until setup (buckets, indexes) is done.
func (a *api) up() error {
	if !a.ready.IsOpen() {
		return unavailable(errors.New("storage not set up yet"))
	}
	return nil
}

type registerRequest struct {
	Account  string `json:"account"`
	Password string `json:"password"`
	Name     string `json:"name"`
}

func (a *api) register(c *gin.Context) {
	u, err := a.doRegister(c)
	a.registrations.WithLabelValues(resultLabel(err)).Inc()
	if err != nil {
		writeError(c, a.log, err)
		return
	}
	a.log.Info("registered", "user", u.ID)
	a.remember(u)
	c.JSON(http.StatusCreated, gin.H{"user": toJSON(u)})
}

func (a *api) doRegister(c *gin.Context) (users.User, error) {
	var req registerRequest
	if err := decodeJSON(c, &req); err != nil {
		return users.User{}, err
	}
	account, err := normalizeAccount(req.Account)
	if err != nil {
		return users.User{}, err
	}
	name, err := normalizeName(req.Name)
	if err != nil {
		return users.User{}, err
	}
	if err := checkNewPassword(req.Password, account, a.common); err != nil {
		return users.User{}, err
	}
	if err := a.up(); err != nil {
		return users.User{}, err
	}
	ctx := c.Request.Context()
	regKey := limits.Key("register_addr", a.clientAddr(c))
	unlock, err := a.lockCounter(ctx, regKey)
	if err != nil {
		return users.User{}, err
	}
	n, err := a.counters.Add(ctx, regKey)
	unlock()
	if err != nil {
		return users.User{}, unavailable(err)
	}
	if n > a.limits.RegistrationsPerAddr {
		_, wait, _ := a.counters.Count(ctx, regKey)
		return users.User{}, &rateLimitError{RetryAfter: wait}
	}
	hash, err := a.hash(ctx, req.Password)
	if err != nil {
		return users.User{}, err
	}
	u := users.User{ID: users.NewID(), Account: account, Name: name, PasswordHash: hash, Created: time.Now().UTC()}
	if err := a.users.Create(ctx, u); err != nil {
		if errors.Is(err, users.ErrAccountTaken) {
			return users.User{}, err
		}
		return users.User{}, unavailable(err)
	}
	return u, nil
}

// hash hashes in the pool, waiting at most HashQueueTimeout for a slot.
func (a *api) hash(ctx context.Context, pw string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, a.limits.HashQueueTimeout)
	defer cancel()
	return a.pool.Hash(ctx, pw)
}

type loginRequest struct {
	Account  string `json:"account"`
	Password string `json:"password"`
}

func (a *api) login(c *gin.Context) {
	u, tok, claims, err := a.doLogin(c)
	a.logins.WithLabelValues(resultLabel(err)).Inc()
	if err != nil {
		writeError(c, a.log, err)
		return
	}
	a.remember(u)
	a.setCookie(c, tok, int(a.lifetime/time.Second))
	c.JSON(http.StatusOK, gin.H{"token": tok, "expires_at": claims.ExpiresAt.UTC().Format(time.RFC3339), "user": toJSON(u)})
}

// remember keeps what anyone may see of u, who just registered or logged
// in, for the lookups by id that follow: presence asks for the names of
// the users who come online, and on FerretDB (the dev stack) a batch of
// unknown ids is a scan of every stored user; in a connect storm of
// thousands of new users those scans were most of the stack's CPU.
func (a *api) remember(u users.User) {
	a.public.Add(chat.User{ID: u.ID, Name: u.Name, Account: u.Account})
}

// doLogin takes the attempt's place under the limits, then checks the
// password. Unknown account and wrong password take the same path, time
// and answer.
func (a *api) doLogin(c *gin.Context) (users.User, string, *token.Claims, error) {
	var req loginRequest
	if err := decodeJSON(c, &req); err != nil {
		return users.User{}, "", nil, err
	}
	if req.Account == "" {
		return users.User{}, "", nil, invalid("account", ruleRequired, "required")
	}
	if req.Password == "" {
		return users.User{}, "", nil, invalid("password", ruleRequired, "required")
	}
	if err := a.up(); err != nil {
		return users.User{}, "", nil, err
	}
	ctx := c.Request.Context()
	account := strings.ToLower(req.Account)
	addrKey, acctKey, pairKey := a.loginKeys(c, account)
	if err := a.reserveLogin(ctx, addrKey, acctKey, pairKey); err != nil {
		return users.User{}, "", nil, err
	}
	u, err := a.checkLogin(ctx, req, account)
	switch {
	case errors.Is(err, ErrBadCredentials):
		// The failure was counted when the attempt was reserved.
		return users.User{}, "", nil, err
	case err != nil:
		// Nothing was checked (no hashing slot, no database): the attempt
		// is no failure.
		a.giveBack(ctx, addrKey, acctKey, pairKey)
		return users.User{}, "", nil, err
	}
	a.loginSucceeded(ctx, addrKey, acctKey, pairKey)
	tok, claims, err := a.issue(ctx, u, time.Now())
	if err != nil {
		return users.User{}, "", nil, err
	}
	return u, tok, claims, nil
}

// loginKeys are the limit counters of a login to account (lowercased)
// from this request's client: its address's failures, the account's, and
// this address's on the account.
func (a *api) loginKeys(c *gin.Context, account string) (addrKey, acctKey, pairKey string) {
	addr := a.clientAddr(c)
	return limits.Key("login_addr", addr), limits.Key("login_acct", account), limits.Key("login_pair", account, addr)
}

// loginSucceeded settles the counters of an attempt whose password was
// right: it clears this address's and the account's failures, and is no
// failure of the address (whose other failures stay: it may be guessing
// others).
func (a *api) loginSucceeded(ctx context.Context, addrKey, acctKey, pairKey string) {
	a.giveBack(ctx, addrKey)
	rctx := context.WithoutCancel(ctx)
	for _, k := range []string{acctKey, pairKey} {
		if cerr := a.counters.Reset(rctx, k); cerr != nil {
			a.log.Warn("limits reset failed", "err", cerr)
		}
	}
}

// checkLogin checks the password: the user, ErrBadCredentials, or the
// error that kept it from being checked.
func (a *api) checkLogin(ctx context.Context, req loginRequest, account string) (users.User, error) {
	// A malformed account cannot exist: check the dummy hash all the same.
	var u users.User
	if _, verr := normalizeAccount(req.Account); verr == nil {
		var err error
		u, err = a.users.ByAccount(ctx, account)
		if err != nil && !errors.Is(err, users.ErrNotFound) {
			return users.User{}, unavailable(err)
		}
	}
	ctxHash, cancel := context.WithTimeout(ctx, a.limits.HashQueueTimeout)
	defer cancel()
	err := a.pool.Check(ctxHash, req.Password, u.PasswordHash)
	if errors.Is(err, password.ErrBusy) {
		return users.User{}, err
	}
	if err != nil {
		if !errors.Is(err, password.ErrMismatch) {
			a.log.Error("stored password hash unreadable", "user", u.ID, "err", err)
		}
		return users.User{}, ErrBadCredentials
	}
	return u, nil
}

// reserveLogin counts the attempt as a failure before its password is
// checked (doLogin gives it back if it is not one), so concurrent attempts
// see each other: however many arrive at once, at most the limit's number
// have their password checked. It refuses an address over its limit, and
// an account over its limit, but the account lock applies only to
// addresses that have failed on it (or are trying now): an attacker
// locking an account does not lock its owner, logging in from elsewhere,
// out.
func (a *api) reserveLogin(ctx context.Context, addrKey, acctKey, pairKey string) error {
	unlock, err := a.lockCounter(ctx, addrKey)
	if err != nil {
		return err
	}
	ok, wait, err := a.counters.Take(ctx, addrKey, a.limits.LoginPerAddress)
	unlock()
	if err != nil {
		return unavailable(err)
	}
	if !ok {
		return &rateLimitError{RetryAfter: wait}
	}
	if err := a.reserveAccount(ctx, acctKey, pairKey); err != nil {
		a.giveBack(ctx, addrKey)
		return err
	}
	return nil
}

// reserveAccount is reserveLogin's step on the account: the account's count
// and this address's failures on it are read and counted in one step,
// under the account's lock (the account's count is a compare-and-set, so
// exact across auth instances too).
func (a *api) reserveAccount(ctx context.Context, acctKey, pairKey string) error {
	unlock, err := a.lockCounter(ctx, acctKey)
	if err != nil {
		return err
	}
	defer unlock()
	ok, wait, err := a.counters.Take(ctx, acctKey, a.limits.LoginPerAccount)
	if err != nil {
		return unavailable(err)
	}
	if !ok {
		pn, _, err := a.counters.Count(ctx, pairKey)
		if err != nil {
			return unavailable(err)
		}
		if pn > 0 {
			return &rateLimitError{RetryAfter: wait}
		}
		// An address that has not failed on the account: counted past the
		// limit, and checked.
		if _, err := a.counters.Add(ctx, acctKey); err != nil {
			return unavailable(err)
		}
	}
	if _, err := a.counters.Add(ctx, pairKey); err != nil {
		return unavailable(err)
	}
	return nil
}

// lockCounter holds a counter for one step, waiting at most
// HashQueueTimeout for attempts ahead on the same key.
func (a *api) lockCounter(ctx context.Context, key string) (func(), error) {
	ctx, cancel := context.WithTimeout(ctx, a.limits.HashQueueTimeout)
	defer cancel()
	unlock, err := a.counters.Lock(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBusy, err)
	}
	return unlock, nil
}

// giveBack takes back attempts counted on keys, whether or not the client
// is still there; a failure is logged (the count then stands until it
// expires).
func (a *api) giveBack(ctx context.Context, keys ...string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), giveBackTimeout)
	defer cancel()
	for _, k := range keys {
		unlock, err := a.counters.Lock(ctx, k)
		if err == nil {
			err = a.counters.Give(ctx, k)
			unlock()
		}
		if err != nil {
			a.log.Warn("limits give back failed", "err", err)
		}
	}
}

func (a *api) setCookie(c *gin.Context, value string, maxAge int) {
	c.SetSameSite(http.SameSiteStrictMode)
	c.SetCookie(chat.TokenCookie, value, maxAge, "/", "", a.secure, true)
}

// logout takes a JSON body, "{}", for the JSON Content-Type: a page of
// another origin cannot send that without a CORS preflight.
func (a *api) logout(c *gin.Context) {
	if err := decodeJSON(c, &struct{}{}); err != nil {
		writeError(c, a.log, err)
		return
	}
	claims := c.MustGet(claimsKey).(*token.Claims)
	rev := chat.Revocation{TokenID: claims.ID, User: claims.Subject, ExpiresAt: claims.ExpiresAt.UTC()}
	body, _ := json.Marshal(rev)
	ttl := max(time.Until(claims.ExpiresAt.Time)+token.Leeway, time.Second)
	if _, err := a.revoked.Create(c.Request.Context(), claims.ID, body, jetstream.KeyTTL(ttl)); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		writeError(c, a.log, unavailable(fmt.Errorf("record revocation: %w", err)))
		return
	}
	// Gateways close this token's sockets on the event; the record makes
	// it stick for services that check later.
	if err := a.nc.Publish(chat.AuthRevokedSubject, body); err != nil {
		a.log.Warn("revocation event not published", "err", err)
	}
	a.setCookie(c, "", -1)
	a.log.Info("logged out", "user", claims.Subject)
	c.Status(http.StatusNoContent)
}

func (a *api) me(c *gin.Context) {
	claims := c.MustGet(claimsKey).(*token.Claims)
	u, err := a.currentUser(c.Request.Context(), claims)
	if err != nil {
		writeError(c, a.log, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"user": toJSON(u)})
}

// sessionResponse answers GET /api/session: the user /api/me would
// return, or null when the request is not logged in.
type sessionResponse struct {
	User *userJSON `json:"user"`
}

// session tells the page whether it is logged in without a failed request:
// 200 with the user, or 200 with null for no token, a bad, expired or
// revoked one, or a user that no longer exists. When it cannot tell (the
// revocation bucket or the user store unreachable) it fails like /api/me
// rather than claim the request is logged out.
func (a *api) session(c *gin.Context) {
	claims, err := a.tokenClaims(c)
	var u users.User
	if err == nil {
		u, err = a.currentUser(c.Request.Context(), claims)
	}
	switch {
	case errors.Is(err, ErrUnauthorized):
		c.JSON(http.StatusOK, sessionResponse{})
	case err != nil:
		writeError(c, a.log, err)
	default:
		uj := toJSON(u)
		c.JSON(http.StatusOK, sessionResponse{User: &uj})
	}
}

// currentUser is the user a verified token names; ErrUnauthorized when
// they no longer exist.
func (a *api) currentUser(ctx context.Context, claims *token.Claims) (users.User, error) {
	u, err := a.users.ByID(ctx, claims.Subject)
	if errors.Is(err, users.ErrNotFound) {
		return users.User{}, ErrUnauthorized
	}
	if err != nil {
		return users.User{}, unavailable(err)
	}
	return u, nil
}

func (a *api) listUsers(c *gin.Context) {
	ids, err := parseIDs(c.Query("ids"))
	if err != nil {
		writeError(c, a.log, err)
		return
	}
	list, err := a.publicUsers(c.Request.Context(), ids)
	if err != nil {
		writeError(c, a.log, err)
		return
	}
	c.JSON(http.StatusOK, chat.UsersGetResponse{Users: list})
}

// parseIDs splits "a,b" into ids, each checked.
func parseIDs(s string) ([]string, error) {
	if s == "" {
		return nil, invalid("ids", ruleRequired, "required: comma-separated user ids")
	}
	ids := strings.Split(s, ",")
	if len(ids) > chat.MaxUsersPerRequest {
		return nil, invalid("ids", ruleCount, "at most %d ids", chat.MaxUsersPerRequest)
	}
	for _, id := range ids {
		if err := chat.ValidID(id); err != nil {
			return nil, invalid("ids", ruleFormat, "%v", err)
		}
	}
	return ids, nil
}

// publicUsers looks ids up and returns what anyone may see: id, name and
// account handle. Neither changes (no endpoint renames a user or an
// account), so found ones are kept in memory, within usercache's bounds:
// gateways and presence ask about the same users all the time.
func (a *api) publicUsers(ctx context.Context, ids []string) ([]chat.User, error) {
	known, missing := a.public.Split(ids)
	if len(missing) > 0 {
		found, err := a.users.ByIDs(ctx, missing)
		if err != nil {
			return nil, unavailable(err)
		}
		for _, u := range found {
			pu := chat.User{ID: u.ID, Name: u.Name, Account: u.Account}
			a.public.Add(pu)
			known[u.ID] = pu
		}
	}
	out := make([]chat.User, 0, len(known))
	for _, id := range ids {
		if u, ok := known[id]; ok {
			out = append(out, u)
			delete(known, id) // each user once
		}
	}
	return out, nil
}

const claimsKey = "claims"

// requireToken admits requests carrying a valid, unrevoked token, from
// the Authorization header or the cookie.
func (a *api) requireToken(c *gin.Context) {
	claims, err := a.tokenClaims(c)
	if err != nil {
		writeError(c, a.log, err)
		return
	}
	c.Set(claimsKey, claims)
	c.Next()
}

// tokenClaims checks the request's token (Authorization header or cookie):
// its claims when it is valid and not revoked (by its id, or with every
// token of its user); ErrUnauthorized when there
// is none or it is bad, expired or revoked; ErrUnavailable when the
// revocation check cannot be made.
func (a *api) tokenClaims(c *gin.Context) (*token.Claims, error) {
	raw := token.FromRequest(c.Request, chat.TokenCookie)
	if raw == "" {
		return nil, ErrUnauthorized
	}
	claims, err := a.verifier.Verify(raw)
	if err != nil {
		return nil, ErrUnauthorized
	}
	if err := a.up(); err != nil {
		return nil, err
	}
	_, err = a.revoked.Get(c.Request.Context(), claims.ID)
	switch {
	case err == nil:
		return nil, ErrUnauthorized // revoked
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, unavailable(fmt.Errorf("revocation check: %w", err))
	}
	// Every token of the user up to a second (see sessions.go).
	r, _, err := a.userRevocation(c.Request.Context(), claims.Subject)
	if err != nil {
		return nil, err
	}
	if r.RevokesIssuedAt(issuedAt(claims)) {
		return nil, ErrUnauthorized
	}
	return claims, nil
}

// ipv6ClientBits is how much of an IPv6 address names one client: a /64
// is one network (one home, one phone), and whoever has one can use any of
// its 2^64 addresses.
const ipv6ClientBits = 64

// clientAddr is the client's address as the limits count it: an IPv4
// address, or the /64 an IPv6 address is in.
func (a *api) clientAddr(c *gin.Context) string { return limitAddr(c.ClientIP()) }

func limitAddr(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	addr = addr.WithZone("").Unmap()
	if addr.Is4() {
		return addr.String()
	}
	return netip.PrefixFrom(addr, ipv6ClientBits).Masked().String()
}

func resultLabel(err error) string {
	if err == nil {
		return "ok"
	}
	_, d, _ := errorResponse(err)
	return d.Code
}
