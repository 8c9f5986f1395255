// Package site is the gateway's HTTP surface: the public routes (page,
// /api/, /ws, health) and the operator's (metrics).
package site

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natter/natter/gateway/web"
	"github.com/natter/natter/services/ops"
)

// Public is every public route of the gateway: health, the API, the
// socket, the page, and metrics unless they have a listener of their own.
func Public(reg *prometheus.Registry, ws, api http.Handler, ready []ops.Check, metrics bool) http.Handler {
	mux := routes(reg, ready, metrics)
	mux.Handle("/api/", api)
	mux.Handle("GET /ws", ws)
	// "/" rather than "GET /": a method pattern there would conflict with
	// the all-methods "/api/"; the page handler refuses other methods.
	mux.Handle("/", web.Handler())
	return ops.NewHTTPMetrics(reg).Wrap(mux)
}

// Ops serves health and metrics on a listener of their own (OPS_ADDR),
// kept off the public port.
func Ops(reg *prometheus.Registry, ready []ops.Check) http.Handler { return routes(reg, ready, true) }

// routes serves health, and metrics if asked.
func routes(reg *prometheus.Registry, ready []ops.Check, metrics bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", ops.Healthz())
	mux.Handle("GET /readyz", ops.Readyz(ready...))
	if metrics {
		mux.Handle("GET /metrics", ops.Metrics(reg))
	}
	return mux
}
