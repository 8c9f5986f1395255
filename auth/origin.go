package main

import (
	"net/netip"
	"net/url"
	"strings"

	"github.com/gin-gonic/gin"
)

// sameOrigin refuses a state-changing request a browser sent from a page
// of another origin, another port of the same host included (SameSite
// cookies do not tell ports apart): 403 forbidden_origin. The check is
// that of net/http.CrossOriginProtection, against the gateway's host:
//
//   - Sec-Fetch-Site, which every current browser sends, decides when
//     present: "same-origin" or "none" (the user's own navigation) pass,
//     "same-site" and "cross-site" do not;
//   - otherwise an Origin must name the host the browser asked for: the
//     X-Forwarded-Host a trusted proxy (the gateway) reports, or this
//     request's Host when it came directly; "null" never passes;
//   - a request with neither is not from a browser page (curl, the load
//     tool) and passes.
//
// With the JSON Content-Type the endpoints require (a header a page can
// only send to another origin after a CORS preflight, which auth never
// answers), this keeps other pages from registering, logging in or out,
// logging out everywhere or changing a password.
func (a *api) sameOrigin(c *gin.Context) {
	switch c.GetHeader("Sec-Fetch-Site") {
	case "same-origin", "none":
		c.Next()
		return
	case "":
	default:
		writeError(c, a.log, ErrForbiddenOrigin)
		return
	}
	origin := c.GetHeader("Origin")
	if origin == "" {
		c.Next()
		return
	}
	if u, err := url.Parse(origin); err != nil || u.Host == "" || !strings.EqualFold(u.Host, a.requestHost(c)) {
		writeError(c, a.log, ErrForbiddenOrigin)
		return
	}
	c.Next()
}

// requestHost is the host (and port) the browser asked for: the gateway's,
// as its proxy reports it in X-Forwarded-Host, when the peer is a trusted
// proxy; this request's Host otherwise.
func (a *api) requestHost(c *gin.Context) string {
	if fwd := c.Request.Header.Values("X-Forwarded-Host"); len(fwd) > 0 && a.fromTrustedProxy(c) {
		// A proxy that appends its own gives the nearest last.
		hosts := strings.Split(fwd[len(fwd)-1], ",")
		if h := strings.TrimSpace(hosts[len(hosts)-1]); h != "" {
			return h
		}
	}
	return c.Request.Host
}

// fromTrustedProxy reports whether the request's peer is one of
// TRUSTED_PROXIES.
func (a *api) fromTrustedProxy(c *gin.Context) bool {
	peer, err := netip.ParseAddr(c.RemoteIP())
	if err != nil {
		return false
	}
	peer = peer.Unmap()
	for _, p := range a.proxies {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}
