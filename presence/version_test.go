package main

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/servicetest"
	"github.com/natter/natter/services/version"
)

func TestReportsItsVersion(t *testing.T) {
	ns := natstest.Start(t)
	p := servicetest.Start(t, "presence", run, map[string]string{"NATS_URL": ns.URL(), "HTTP_ADDR": "127.0.0.1:0"})
	p.WaitReady(t)

	subject, err := micro.ControlSubject(micro.InfoVerb, chat.PresenceService, "")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := natstest.Connect(t, ns.URL()).Request(subject, nil, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatalf("%s: %v in %s", subject, err, msg.Data)
	}
	// A test binary is built inside the repository: no module version.
	if info.Version != version.Devel {
		t.Errorf("presence reports version %q, want %q", info.Version, version.Devel)
	}
	if code, _ := p.Get(t, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d after the info request", code)
	}
}
