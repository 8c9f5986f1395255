package main

import (
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/natter/natter/services/ops"
)

// newServer is every route of auth, with its middleware. trustedProxies
// are the addresses (the gateways) whose X-Forwarded-For is believed; none
// by default (gin's own default believes everyone).
func newServer(log *slog.Logger, reg *prometheus.Registry, a *api, trustedProxies []netip.Prefix, ready []ops.Check) (*gin.Engine, error) {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	proxies := make([]string, len(trustedProxies))
	for i, p := range trustedProxies {
		proxies[i] = p.String()
	}
	if err := r.SetTrustedProxies(proxies); err != nil {
		return nil, err
	}
	r.HandleMethodNotAllowed = true
	r.Use(requestMetrics(ops.NewHTTPMetrics(reg)), recovery(log), apiHeaders)

	r.GET("/healthz", gin.WrapH(ops.Healthz()))
	r.GET("/readyz", gin.WrapH(ops.Readyz(ready...)))
	r.GET("/metrics", gin.WrapH(ops.Metrics(reg)))

	api := r.Group("/api")
	// Requests that change state come from the gateway's own page or from
	// no page at all, never from another origin's.
	api.POST("/register", a.sameOrigin, a.register)
	api.POST("/login", a.sameOrigin, a.login)
	api.POST("/logout", a.sameOrigin, a.requireToken, a.logout)
	api.POST("/logout-all", a.sameOrigin, a.requireToken, a.logoutAll)
	api.POST("/password", a.sameOrigin, a.requireToken, a.changePassword)
	api.GET("/session", a.session) // logged in or not, never a 401
	authed := api.Group("", a.requireToken)
	authed.GET("/me", a.me)
	authed.GET("/users", a.listUsers)

	r.NoRoute(func(c *gin.Context) { writeError(c, log, ErrNotFound) })
	r.NoMethod(func(c *gin.Context) { writeError(c, log, ErrMethod) })
	return r, nil
}

// requestMetrics records every request under its route pattern.
func requestMetrics(m *ops.HTTPMetrics) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		m.Observe(c.Request.Method, c.FullPath(), c.Writer.Status(), time.Since(start))
	}
}

// apiHeaders marks every answer as what its Content-Type says, never to be
// sniffed into something else, and every /api answer (users, tokens,
// sessions, errors) as not to be stored by any cache.
func apiHeaders(c *gin.Context) {
	c.Header("X-Content-Type-Options", "nosniff")
	if strings.HasPrefix(c.Request.URL.Path, "/api/") {
		c.Header("Cache-Control", "no-store")
	}
	c.Next()
}

// recovery turns a panic into a logged 500 with natter's error body, so one
// bad request never takes the service down.
func recovery(log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if p := recover(); p != nil {
				log.Error("panic serving request", "path", c.FullPath(), "panic", p)
				writeError(c, log, ErrPanic)
			}
		}()
		c.Next()
	}
}
