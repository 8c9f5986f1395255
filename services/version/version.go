// Package version says which version of natter a binary was built from,
// in the semantic-version form NATS micro services must report.
package version

import (
	"regexp"
	"runtime/debug"
	"strings"
)

// Devel is reported by a build that carries no module version: one made
// inside this repository (`make build`, go.work), where the main module's
// version is "(devel)".
const Devel = "0.1.0-dev"

// semVer is the semantic version grammar (semver.org) that micro requires
// of a service's version.
var semVer = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// Current is what a service reports to `nats micro ls` and `nats micro
// info`, and logs at start: the version of the module the binary was
// built from, as the go command records it (`go install
// github.com/natter/natter/presence@v1.2.0` gives 1.2.0), or
// Devel.
func Current() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return Devel
	}
	return moduleVersion(info.Main.Version)
}

// moduleVersion turns a Go module version ("v1.2.0", a pseudo-version,
// "(devel)") into the semantic version micro accepts: without the "v",
// or Devel for anything that is not one.
func moduleVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if !semVer.MatchString(v) {
		return Devel
	}
	return v
}
