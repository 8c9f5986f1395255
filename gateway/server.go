package main

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httputil"
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
func newServer(log *slog.Logger, reg *prometheus.Registry, authURL *url.URL, g *gateway, ready []ops.Check) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", ops.Healthz())
	mux.Handle("GET /readyz", ops.Readyz(ready...))
	mux.Handle("GET /metrics", ops.Metrics(reg))
	mux.Handle("/api/", newAPIProxy(log, authURL))
	mux.HandleFunc("GET /ws", g.serveWS)
	// "/" rather than "GET /": a method pattern there would conflict with
	// the all-methods "/api/"; securePage rejects other methods itself.
	mux.Handle("/", securePage(http.FileServerFS(web.Files)))
	return ops.NewHTTPMetrics(reg).Wrap(mux)
}

// newAPIProxy forwards /api/ to auth unchanged. Rewrite drops any
// X-Forwarded-* a client sent and sets X-Forwarded-For to the client's real
// address, which auth trusts only from configured proxies.
func newAPIProxy(log *slog.Logger, target *url.URL) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.SetXForwarded()
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Warn("auth unreachable", "path", r.URL.Path, "err", err)
			writeError(w, http.StatusBadGateway, "unavailable", "the auth service is unreachable; try again shortly")
		},
	}
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
