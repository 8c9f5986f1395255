package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/servicetest"
)

func TestHealthAndReadiness(t *testing.T) {
	ns := natstest.Start(t)
	p := servicetest.Start(t, "presence", run, map[string]string{"NATS_URL": ns.URL(), "HTTP_ADDR": "127.0.0.1:0"})
	if code, body := p.Get(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d %s", code, body)
	}
	p.WaitReady(t)
	if _, err := natstest.JetStream(t, ns.URL()).KeyValue(context.Background(), chat.PresenceBucket); err != nil {
		t.Fatalf("bucket after ready: %v", err)
	}
	if code, _ := p.Get(t, "/metrics"); code != http.StatusOK {
		t.Errorf("/metrics = %d", code)
	}

	ns.Stop()
	servicetest.WaitStatus(t, p.URL+"/readyz", http.StatusServiceUnavailable, 10*time.Second)
	ns.Restart(t)
	p.WaitReady(t)
	if err := p.Stop(); err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
}

func TestStartsBeforeNATS(t *testing.T) {
	// Services may start in any order: presence up first is alive, not
	// ready, and becomes ready when NATS arrives.
	ns := natstest.Start(t)
	url := ns.URL()
	ns.Stop()
	p := servicetest.Start(t, "presence", run, map[string]string{"NATS_URL": url, "HTTP_ADDR": "127.0.0.1:0"})
	if code, _ := p.Get(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	if code, _ := p.Get(t, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz without NATS = %d, want 503", code)
	}
	ns.Restart(t)
	p.WaitReady(t)
}
