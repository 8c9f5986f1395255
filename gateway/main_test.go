package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/poll"
	"github.com/natter/natter/services/servicetest"
	"github.com/natter/natter/services/token"
)

func startGateway(t *testing.T, env map[string]string) *servicetest.Service {
	t.Helper()
	env["HTTP_ADDR"] = "127.0.0.1:0"
	return servicetest.Start(t, "gateway", run, env)
}

func TestHealthAndReadiness(t *testing.T) {
	ns := natstest.Start(t)
	gw := startGateway(t, map[string]string{"NATS_URL": ns.URL()})

	if code, body := gw.Get(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d %s", code, body)
	}
	// Without auth's keys no socket can open: not ready, and it says why.
	servicetest.WaitStatus(t, gw.URL+"/readyz", http.StatusServiceUnavailable, 10*time.Second)
	if _, body := gw.Get(t, "/readyz"); !strings.Contains(string(body), `"auth keys"`) {
		t.Errorf("/readyz before auth's keys = %s, want it to name them", body)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serveKeys(t, natstest.Connect(t, ns.URL()), token.NewKey(priv))
	gw.WaitReady(t)

	// The stream and bucket exist once the gateway is ready.
	js := natstest.JetStream(t, ns.URL())
	if _, err := js.Stream(context.Background(), chat.StreamName); err != nil {
		t.Fatalf("stream after ready: %v", err)
	}
	if _, err := js.KeyValue(context.Background(), chat.PresenceBucket); err != nil {
		t.Fatalf("bucket after ready: %v", err)
	}

	// NATS down: not ready, but alive; NATS back: ready again.
	ns.Stop()
	servicetest.WaitStatus(t, gw.URL+"/readyz", http.StatusServiceUnavailable, 10*time.Second)
	code, body := gw.Get(t, "/readyz")
	if !strings.Contains(string(body), `"nats"`) {
		t.Errorf("/readyz while NATS is down = %d %s, want it to name nats", code, body)
	}
	if code, _ := gw.Get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while NATS is down = %d, want 200", code)
	}
	ns.Restart(t)
	gw.WaitReady(t)

	if err := gw.Stop(); err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
}

func TestPageAndMetrics(t *testing.T) {
	ns := natstest.Start(t)
	gw := startGateway(t, map[string]string{"NATS_URL": ns.URL()})

	resp, err := http.Get(gw.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "<title>natter</title>") {
		t.Fatalf("GET / = %d %s", resp.StatusCode, body)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
	if code, _ := gw.Get(t, "/style.css"); code != http.StatusOK {
		t.Errorf("GET /style.css = %d", code)
	}
	if code, _ := gw.Get(t, "/nope"); code != http.StatusNotFound {
		t.Errorf("GET /nope = %d, want 404", code)
	}
	code, metrics := gw.Get(t, "/metrics")
	if code != http.StatusOK || !strings.Contains(string(metrics), `http_requests_total{code="200",method="GET",route="/"}`) {
		t.Errorf("/metrics = %d, want http_requests_total for GET /:\n%.2000s", code, metrics)
	}
}

func TestAPIProxy(t *testing.T) {
	ns := natstest.Start(t)
	got := make(chan *http.Request, 1)
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, `{"from":"auth"}`)
	}))
	defer auth.Close()
	gw := startGateway(t, map[string]string{"NATS_URL": ns.URL(), "AUTH_URL": auth.URL})

	req, _ := http.NewRequest(http.MethodPost, gw.URL+"/api/login?x=1", strings.NewReader(`{"a":1}`))
	req.Header.Set("X-Forwarded-For", "6.6.6.6") // a client cannot choose its address
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot || string(body) != `{"from":"auth"}` {
		t.Fatalf("proxied response = %d %s", resp.StatusCode, body)
	}
	r := <-got
	if r.Method != http.MethodPost || r.URL.Path != "/api/login" || r.URL.RawQuery != "x=1" {
		t.Errorf("auth saw %s %s", r.Method, r.URL)
	}
	if xff := r.Header.Get("X-Forwarded-For"); xff != "127.0.0.1" {
		t.Errorf("X-Forwarded-For at auth = %q, want the client's real address 127.0.0.1", xff)
	}

	// Auth down: 503 with when to retry and a clear JSON error, not a
	// hang or an HTML page.
	auth.Close()
	resp, err = http.Post(gw.URL+"/api/login", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		Error struct{ Code, Message string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != http.StatusServiceUnavailable || e.Error.Code != "unavailable" {
		t.Fatalf("auth down: %d %+v %v", resp.StatusCode, e, err)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("auth down: no Retry-After")
	}
}

// Behind a trusted load balancer, the browser's address it reports goes on
// to auth, followed by the balancer's; from anyone else it is dropped.
func TestAPIProxyTrustedProxies(t *testing.T) {
	ns := natstest.Start(t)
	got := make(chan string, 1)
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- strings.Join(r.Header.Values("X-Forwarded-For"), ", ")
		w.WriteHeader(http.StatusNoContent)
	}))
	defer auth.Close()
	tests := []struct {
		name, trusted, sent, want string
	}{
		{name: "no proxy trusted", trusted: "", sent: "203.0.113.7", want: "127.0.0.1"},
		{name: "peer trusted by address", trusted: "127.0.0.1", sent: "203.0.113.7", want: "203.0.113.7, 127.0.0.1"},
		{name: "peer trusted by CIDR", trusted: "10.0.0.0/8, 127.0.0.0/8", sent: "198.51.100.1, 203.0.113.7", want: "198.51.100.1, 203.0.113.7, 127.0.0.1"},
		{name: "other proxies trusted", trusted: "10.0.0.0/8", sent: "203.0.113.7", want: "127.0.0.1"},
		{name: "trusted peer, no header", trusted: "127.0.0.1", sent: "", want: "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := startGateway(t, map[string]string{"NATS_URL": ns.URL(), "AUTH_URL": auth.URL, "TRUSTED_PROXIES": tt.trusted})
			req, _ := http.NewRequest(http.MethodPost, gw.URL+"/api/logout", nil)
			if tt.sent != "" {
				req.Header.Set("X-Forwarded-For", tt.sent)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if xff := <-got; xff != tt.want {
				t.Errorf("X-Forwarded-For at auth = %q, want %q", xff, tt.want)
			}
		})
	}
}

func TestStreamConflictStops(t *testing.T) {
	ns := natstest.Start(t)
	js := natstest.JetStream(t, ns.URL())
	o := chat.DefaultStreamOptions()
	o.Retention = time.Hour
	if _, err := chat.EnsureStream(context.Background(), js, o); err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, map[string]string{"NATS_URL": ns.URL()})
	done := make(chan error, 1)
	go func() { done <- gw.Wait() }()
	select {
	case err := <-done:
		if !errors.Is(err, chat.ErrConfigConflict) {
			t.Fatalf("run = %v, want ErrConfigConflict", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("gateway kept running on a conflicting stream")
	}
}

func TestBadConfig(t *testing.T) {
	tests := []struct{ name, key, value, want string }{
		{"auth url", "AUTH_URL", "ftp://x", "auth url"},
		{"trusted proxies", "TRUSTED_PROXIES", "10.0.0.0/8, lb.local", "trusted proxies"},
		{"write delay too long", "WRITE_DELAY", "1s", "websocket limits"},
		{"negative write delay", "WRITE_DELAY", "-5ms", "websocket limits"},
		{"retention", "CHAT_RETENTION", "a week", "CHAT_RETENTION"},
		{"log format", "LOG_FORMAT", "xml", "log format"},
		{"dedupe longer than retention", "CHAT_RETENTION", "1m", "dedupe window"},
		{"pprof on every interface", "PPROF_ADDR", ":6060", "pprof addr"},
		{"pprof on a public address", "PPROF_ADDR", "192.0.2.1:6060", "pprof addr"},
		{"quota under one message", "USER_BYTES_PER_HOUR", "1000", "user bytes per hour"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{tt.key: tt.value}
			err := run(context.Background(), []string{"gateway"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

// With OPS_ADDR, metrics are served there and not on the public port,
// which keeps health for the load balancer.
func TestOpsListener(t *testing.T) {
	ns := natstest.Start(t)
	opsAddr := servicetest.FreeAddrs(t, 1)[0]
	gw := startGateway(t, map[string]string{"NATS_URL": ns.URL(), "OPS_ADDR": opsAddr})
	if code, _ := gw.Get(t, "/metrics"); code != http.StatusNotFound {
		t.Errorf("public /metrics = %d, want 404", code)
	}
	if code, _ := gw.Get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("public /healthz = %d, want 200", code)
	}
	poll.Until(t, 10*time.Second, func() error {
		resp, err := http.Get("http://" + opsAddr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "gateway_sockets_open") {
			return fmt.Errorf("ops /metrics = %d %.200s", resp.StatusCode, body)
		}
		return nil
	})
}
