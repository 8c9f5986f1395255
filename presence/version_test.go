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
)

func TestModuleVersion(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t).URL())
	for _, tc := range []struct{ module, want string }{
		{"(devel)", develVersion}, // built inside the repository
		{"", develVersion},
		{"v1.2.0", "1.2.0"},
		{"v1.3.0-rc.1", "1.3.0-rc.1"},
		{"v0.0.0-20261203033455-abcdef123456", "0.0.0-20261203033455-abcdef123456"},
		{"v0.0.0-20261203033455-abcdef123456+dirty", "0.0.0-20261203033455-abcdef123456+dirty"},
		{"v1.2.1-0.20261203033455-abcdef123456", "1.2.1-0.20261203033455-abcdef123456"},
		{"v0.0.0-20261203033455-012345678901", "0.0.0-20261203033455-012345678901"},
		{"v2.0.0+incompatible", "2.0.0+incompatible"},
	} {
		t.Run(tc.module, func(t *testing.T) {
			got := moduleVersion(tc.module)
			if got != tc.want {
				t.Fatalf("moduleVersion(%q) = %q, want %q", tc.module, got, tc.want)
			}
			// micro refuses a service whose version is not semver.
			svc, err := micro.AddService(nc, micro.Config{Name: "versioncheck", Version: got})
			if err != nil {
				t.Fatalf("micro refuses version %q: %v", got, err)
			}
			_ = svc.Stop()
		})
	}
}

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
	if info.Version != develVersion {
		t.Errorf("presence reports version %q, want %q", info.Version, develVersion)
	}
	if code, _ := p.Get(t, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d after the info request", code)
	}
}
