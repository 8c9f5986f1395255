package main

import (
	"log/slog"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/natter/natter/services/ops"
)

// newServer is every route of auth, with its middleware.
func newServer(log *slog.Logger, reg *prometheus.Registry, ready []ops.Check) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(requestMetrics(ops.NewHTTPMetrics(reg)), recovery(log))

	r.GET("/healthz", gin.WrapH(ops.Healthz()))
	r.GET("/readyz", gin.WrapH(ops.Readyz(ready...)))
	r.GET("/metrics", gin.WrapH(ops.Metrics(reg)))
	return r
}

// requestMetrics records every request under its route pattern.
func requestMetrics(m *ops.HTTPMetrics) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		m.Observe(c.Request.Method, c.FullPath(), c.Writer.Status(), time.Since(start))
	}
}

// recovery turns a panic into a logged 500 with natter's error body, so one
// bad request never takes the service down.
func recovery(log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if p := recover(); p != nil {
				log.Error("panic serving request", "path", c.FullPath(), "panic", p)
				c.AbortWithStatusJSON(500, gin.H{"error": gin.H{"code": "internal", "message": "internal error"}})
			}
		}()
		c.Next()
	}
}
