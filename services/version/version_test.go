package version

import (
	"testing"

	"github.com/nats-io/nats.go/micro"

	"github.com/natter/natter/services/natstest"
)

func TestModuleVersion(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t).URL())
	for _, tc := range []struct{ module, want string }{
		{"(devel)", Devel}, // built inside the repository
		{"", Devel},
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
