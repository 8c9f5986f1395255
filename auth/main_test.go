package main

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/natter/natter/services/mongotest"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/servicetest"
)

func TestHealthAndReadiness(t *testing.T) {
	ns := natstest.Start(t)
	db := mongotest.Start(t)
	a := servicetest.Start(t, "auth", run, map[string]string{
		"NATS_URL": ns.URL(), "MONGO_URI": db.URI(), "HTTP_ADDR": "127.0.0.1:0",
		"AUTH_SIGNING_KEY_FILE": filepath.Join(t.TempDir(), "key.pem"), "AUTH_GENERATE_SIGNING_KEY": "true",
	})
	if code, body := a.Get(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d %s", code, body)
	}
	a.WaitReady(t)

	// Either dependency down: not ready, naming it; back: ready again.
	tests := []struct {
		dep     string
		stop    func()
		restart func(testing.TB)
	}{
		{"mongo", db.Stop, db.Restart},
		{"nats", ns.Stop, ns.Restart},
	}
	for _, tt := range tests {
		tt.stop()
		servicetest.WaitStatus(t, a.URL+"/readyz", http.StatusServiceUnavailable, 15*time.Second)
		if _, body := a.Get(t, "/readyz"); !strings.Contains(string(body), `"`+tt.dep+`"`) {
			t.Errorf("/readyz with %s down = %s, want it named", tt.dep, body)
		}
		if code, _ := a.Get(t, "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz with %s down = %d", tt.dep, code)
		}
		tt.restart(t)
		a.WaitReady(t)
	}
	if err := a.Stop(); err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
}
