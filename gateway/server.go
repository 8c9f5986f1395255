package main

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natter/natter/gateway/web"
	"github.com/natter/natter/services/ops"
)

// contentSecurityPolicy allows the page to load and connect only to the
// gateway itself: no inline script, no third-party anything.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// newServer is every route of the gateway.
func newServer(log *slog.Logger, reg *prometheus.Registry, api http.Handler, g *gateway, ready []ops.Check) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", ops.Healthz())
	mux.Handle("GET /readyz", ops.Readyz(ready...))
	mux.Handle("GET /metrics", ops.Metrics(reg))
	mux.Handle("/api/", api)
	mux.HandleFunc("GET /ws", g.serveWS)
	// "/" rather than "GET /": a method pattern there would conflict with
	// the all-methods "/api/"; securePage rejects other methods itself.
	mux.Handle("/", securePage(http.FileServerFS(web.Files)))
	return ops.NewHTTPMetrics(reg).Wrap(mux)
}

// newAPIProxy forwards /api/ to auth unchanged. Rewrite drops any
// X-Forwarded-* a client sent and sets X-Forwarded-For to the peer's
// address; only a peer among the trusted proxies (the load balancer in
// front) has its X-Forwarded-For kept, with the peer appended, so auth's
// per-address limits see the browser's address, never one a client chose.
func newAPIProxy(log *slog.Logger, target *url.URL, trusted []netip.Prefix) http.Handler {
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
			writeError(w, http.StatusBadGateway, "unavailable", "the auth service is unreachable; try again shortly")
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

// securePage sets the browser security headers of the page and its assets.
func securePage(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
			return
		}
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		h.ServeHTTP(w, r)
	})
}

// writeError writes natter's error body: {"error":{"code","message"}}.
func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": message}})
}
