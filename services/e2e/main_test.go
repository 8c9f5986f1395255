// Package e2e_test checks natter from outside, as an operator meets it: it
// runs the built binaries (bin/, or built here when NATTER_BIN is unset) the
// way `make dev` does, on free loopback ports, and inspects the running
// system with the `nats` CLI recipes of the README.
package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binDir holds devrun, devstack, auth, presence, gateway and nats-server.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	binDir = os.Getenv("NATTER_BIN")
	if binDir == "" {
		dir, err := os.MkdirTemp("", "natter-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		// Workspace mode resolves every module's main package from here.
		cmd := exec.Command("go", "build", "-o", dir+"/",
			"github.com/natter/natter/services/cmd/devrun",
			"github.com/natter/natter/services/cmd/devstack",
			"github.com/natter/natter/services/cmd/natter-bench",
			"github.com/natter/natter/auth",
			"github.com/natter/natter/presence",
			"github.com/natter/natter/gateway",
			"github.com/nats-io/nats-server/v2")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building binaries:", err)
			return 1
		}
		binDir = dir
	}
	for _, name := range []string{"devrun", "devstack", "natter-bench", "auth", "presence", "gateway", "nats-server"} {
		if _, err := os.Stat(filepath.Join(binDir, name)); err != nil {
			fmt.Fprintf(os.Stderr, "binary %s missing in %s (run `make build`): %v\n", name, binDir, err)
			return 1
		}
	}
	return m.Run()
}
