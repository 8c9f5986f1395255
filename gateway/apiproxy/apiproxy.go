// Package apiproxy forwards the browser's /api/ requests to auth, passing
// on the client's address only as a trusted proxy in front tells it.
package apiproxy

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"

	"github.com/natter/natter/services/ops"
)

// retryAfter is what a refused request is told to wait, in seconds: auth
// restarting or failing over takes about that.
const retryAfter = "2"

// New forwards /api/ to auth unchanged. Rewrite drops any
// X-Forwarded-* a client sent and sets X-Forwarded-For to the peer's
// address; only a peer among the trusted proxies (the load balancer in
// front) has its X-Forwarded-For kept, with the peer appended, so auth's
// per-address limits see the browser's address, never one a client chose.
func New(log *slog.Logger, target *url.URL, trusted []netip.Prefix) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			if xff := r.In.Header.Values("X-Forwarded-For"); len(xff) > 0 && trustedPeer(r.In.RemoteAddr, trusted) {
				r.Out.Header["X-Forwarded-For"] = xff
			}
			r.SetXForwarded()
			// Auth takes X-Real-IP when X-Forwarded-For gives nothing: a
			// client must not set it either.
			r.Out.Header.Del("X-Real-IP")
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Warn("auth unreachable", "path", r.URL.Path, "err", err)
			// 503 with when to retry: clients (the page, a load balancer)
			// wait rather than give up, as for any unavailable service.
			w.Header().Set("Retry-After", retryAfter)
			ops.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the auth service is unreachable; try again shortly")
		},
	}
}

// trustedPeer reports whether remote (host:port) is in one of trusted.
func trustedPeer(remote string, trusted []netip.Prefix) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	for _, p := range trusted {
		if p.Contains(ap.Addr().Unmap()) {
			return true
		}
	}
	return false
}

// ParsePrefixes reads comma-separated addresses and CIDRs.
func ParsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}
