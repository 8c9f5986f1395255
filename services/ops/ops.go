// Package ops serves what operators and orchestrators ask of every natter
// service (liveness, readiness per dependency, Prometheus metrics) and runs
// an http.Server that shuts down gracefully.
package ops

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Timing limits of every service's HTTP side.
const (
	// ShutdownTimeout is how long a stopping server lets requests in flight
	// finish; with the rest of a service's teardown it stays within the
	// 10 s a service is given to stop.
	ShutdownTimeout = 7 * time.Second
	// CheckTimeout bounds one readiness check, so /readyz answers promptly
	// even when a dependency hangs.
	CheckTimeout = 2 * time.Second
	// ReadHeaderTimeout bounds a client's request headers (slowloris).
	ReadHeaderTimeout = 5 * time.Second
	// ReadTimeout bounds reading a whole request, headers and body: a body
	// trickled a byte at a time does not hold a connection open (auth
	// makes its own a setting, HTTP_READ_TIMEOUT). A websocket's reads
	// are not bound by it: the upgrade clears the connection's deadlines.
	ReadTimeout = 10 * time.Second
	// IdleTimeout closes idle keep-alive connections.
	IdleTimeout = 2 * time.Minute
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes = 64 << 10
)

// Check is one dependency whose reachability makes a service ready.
type Check struct {
	Name string
	Run  func(ctx context.Context) error
}

// Healthz answers 200 while the process can serve at all.
func Healthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

// Readyz runs every check concurrently and answers 200 when all pass, 503
// naming each failing check otherwise.
func Readyz(checks ...Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), CheckTimeout)
		defer cancel()
		results := make(map[string]string, len(checks))
		var mu sync.Mutex
		var wg sync.WaitGroup
		ready := true
		for _, c := range checks {
			wg.Go(func() {
				res := "ok"
				if err := c.Run(ctx); err != nil {
					res = err.Error()
				}
				mu.Lock()
				defer mu.Unlock()
				results[c.Name] = res
				if res != "ok" {
					ready = false
				}
			})
		}
		wg.Wait()
		body := map[string]any{"status": "ready", "checks": results}
		code := http.StatusOK
		if !ready {
			body["status"] = "unavailable"
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, body)
	})
}

// WriteError writes natter's HTTP error body, {"error":{"code","message"}}
// (see chat.Error), not to be sniffed or cached.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": message}})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// NewRegistry is a metrics registry with the Go runtime and process
// collectors; each service registers its own metrics on it.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Metrics serves reg in the Prometheus text format.
func Metrics(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// HTTPMetrics counts and times HTTP requests by route pattern, never by raw
// path, so a scan of random URLs cannot explode the series count.
type HTTPMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewHTTPMetrics registers http_requests_total and
// http_request_duration_seconds on reg.
func NewHTTPMetrics(reg prometheus.Registerer) *HTTPMetrics {
	m := &HTTPMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total", Help: "HTTP requests by method, route pattern and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "http_request_duration_seconds", Help: "HTTP request latency by route pattern.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// Observe records one request; route is the matched pattern ("" if none).
func (m *HTTPMetrics) Observe(method, route string, code int, d time.Duration) {
	if route == "" {
		route = "unmatched"
	}
	m.requests.WithLabelValues(method, route, fmt.Sprint(code)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

// Wrap instruments a net/http handler; the route is the ServeMux pattern.
func (m *HTTPMetrics) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r)
		m.Observe(r.Method, r.Pattern, sw.code, time.Since(start))
	})
}

// statusWriter remembers the status code; Unwrap keeps Hijack (websocket
// upgrades) and Flush reachable through http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.code, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Hijack lets websocket upgraders take the connection; the status is 101.
func (s *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	s.code, s.wrote = http.StatusSwitchingProtocols, true
	return http.NewResponseController(s.ResponseWriter).Hijack()
}

// NewServer is an http.Server for h with the limits above. Write timeouts
// are left to handlers: websocket connections outlive any fixed one.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}

// Serve serves srv on ln until ctx is done, then shuts down gracefully
// within ShutdownTimeout. It returns nil after a clean shutdown.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		// Requests still running past the budget are cut off.
		err = srv.Close()
	}
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) {
		return fmt.Errorf("http server: %w", e)
	}
	if err != nil {
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}

// Gate is a readiness check that fails until Open is called: for start-up
// work (creating streams, loading keys) that runs after the server is up.
type Gate struct {
	name string
	done chan struct{}
	once sync.Once
}

// NewGate returns a closed gate for the work called name.
func NewGate(name string) *Gate { return &Gate{name: name, done: make(chan struct{})} }

// Open marks the work done.
func (g *Gate) Open() { g.once.Do(func() { close(g.done) }) }

// IsOpen reports whether the work is done. Whatever the work set up
// before Open is visible to a caller that saw IsOpen return true.
func (g *Gate) IsOpen() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// Check is the gate as a readiness check.
func (g *Gate) Check() Check {
	return Check{Name: g.name, Run: func(context.Context) error {
		if !g.IsOpen() {
			return errors.New("not set up yet")
		}
		return nil
	}}
}

// SetupRetry is the pause between attempts of a service's start-up work
// (Setup) while a dependency (NATS, MongoDB) is not reachable yet.
const SetupRetry = time.Second

// PermanentIs is a permanent test for Setup and Retry: an error that is
// one of targets (errors.Is) ends the retries, any other is retried. With
// no targets every error is retried.
func PermanentIs(targets ...error) func(error) bool {
	return func(err error) bool {
		for _, t := range targets {
			if errors.Is(err, t) {
				return true
			}
		}
		return false
	}
}

// Retry calls f every interval until it returns nil, ctx ends, or it
// returns an error for which permanent is true; it returns that error.
// Transient failures (a dependency still starting) are passed to onErr.
func Retry(ctx context.Context, interval time.Duration, f func(context.Context) error, permanent func(error) bool, onErr func(error)) error {
	for {
		err := f(ctx)
		if err == nil || permanent(err) {
			return err
		}
		onErr(err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// Setup runs a service's start-up work (creating streams, buckets, keys) in
// the background so health and metrics are served meanwhile. Transient
// failures are logged and retried every interval; a permanent one ends the
// service through fail. The returned gate opens when the work succeeds.
func Setup(ctx context.Context, log *slog.Logger, name string, interval time.Duration,
	work func(context.Context) error, permanent func(error) bool, fail context.CancelCauseFunc) *Gate {
	g := NewGate(name)
	go func() {
		err := Retry(ctx, interval, work, permanent, func(err error) {
			log.Warn("setup failed, retrying", "setup", name, "err", err, "retry_in", interval)
		})
		switch {
		case err == nil:
			log.Info("setup done", "setup", name)
			g.Open()
		case ctx.Err() == nil:
			fail(fmt.Errorf("%s: %w", name, err))
		}
	}()
	return g
}

// ListenAndServe listens on addr, logs the bound address as "listening"
// (tests started with ":0" read it there), and serves h until ctx is done.
func ListenAndServe(ctx context.Context, log *slog.Logger, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	log.Info("listening", "addr", ln.Addr().String())
	return Serve(ctx, NewServer(h), ln)
}

// Cause is what ended a service's context: nil for a normal stop (signal
// or cancel), the permanent setup error otherwise.
func Cause(ctx context.Context) error {
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c
	}
	return nil
}

// Every calls f every period until ctx ends (background upkeep: key
// refresh, heartbeats).
func Every(ctx context.Context, period time.Duration, f func(context.Context)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(ctx)
		}
	}
}

// Profiling serves net/http/pprof on addr until ctx ends; empty addr:
// off. A profile shows the program's memory, so addr must be a loopback
// address (reach it through an SSH tunnel or kubectl port-forward).
func Profiling(ctx context.Context, log *slog.Logger, addr string) error {
	if addr == "" {
		return nil
	}
	if !IsLoopback(addr) {
		return fmt.Errorf("pprof address %q: want a loopback address such as 127.0.0.1:6060", addr)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() {
		log.Info("pprof listening", "pprof_addr", addr)
		if err := ListenAndServe(ctx, log.With("server", "pprof"), addr, mux); err != nil {
			log.Warn("pprof server stopped", "err", err)
		}
	}()
	return nil
}

// IsLoopback says whether addr (host:port) listens on loopback only.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// HealthcheckCommand is the first argument that makes a service binary
// probe a URL instead of serving: container health checks in images with
// no shell or curl (`/natter healthcheck http://127.0.0.1:8080/readyz`).
const HealthcheckCommand = "healthcheck"

// healthcheckTimeout bounds one probe, under the usual 5 s check timeout.
const healthcheckTimeout = 3 * time.Second

// Healthcheck GETs the one URL in args and succeeds on 200, printing the
// status; any other answer or no answer is an error.
func Healthcheck(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: %s URL (for example http://127.0.0.1:8080/readyz)", HealthcheckCommand)
	}
	ctx, cancel := context.WithTimeout(ctx, healthcheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck %s: %s %s", args[0], resp.Status, bytes.TrimSpace(body))
	}
	fmt.Fprintf(stdout, "%s: %s\n", args[0], resp.Status)
	return nil
}
