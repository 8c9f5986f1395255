package e2e_test

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// natter-bench against a real stack (devrun: NATS, FerretDB, the three
// services): each scenario, small, reports what a run must, so the
// measuring instrument is tested, not only what it measures.
func TestLoadToolScenarios(t *testing.T) {
	s := startDevRun(t, t.TempDir(), "ARGON2_MEMORY_KIB=64", "ARGON2_ITERATIONS=1",
		"SEND_RATE=1000", "SEND_BURST=1000", "REGISTRATIONS_PER_ADDRESS=1000",
		"USER_SENDS_PER_MINUTE=1000000", "USER_BYTES_PER_HOUR=1000000000")
	s.waitReady(t)
	gatewayPID := ""
	for _, p := range children(t, s.cmd.Process.Pid) {
		if p.name == "gateway" {
			gatewayPID = strconv.Itoa(p.pid)
		}
	}
	if gatewayPID == "" {
		t.Fatal("devrun runs no gateway")
	}
	tokens := filepath.Join(t.TempDir(), "tokens.json")
	bench := func(args ...string) map[string]float64 {
		t.Helper()
		cmd := exec.Command(filepath.Join(binDir, "natter-bench"),
			append(args, "-gateway", s.gateway, "-gateway-pid", gatewayPID, "-token-cache", tokens, "-json")...)
		cmd.Env = cleanEnv()
		var stderrBuf strings.Builder
		cmd.Stderr = &stderrBuf
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("natter-bench %v: %v\n%s", args, err, stderrBuf.String())
		}
		var r struct {
			Figures map[string]float64 `json:"figures"`
		}
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("natter-bench %v printed %q: %v", args, out, err)
		}
		return r.Figures
	}
	want := func(scenario string, f map[string]float64, name string, ok func(float64) bool) {
		t.Helper()
		if v, found := f[name]; !found || !ok(v) {
			t.Errorf("%s: %s = %v (present %v)", scenario, name, v, found)
		}
	}
	positive := func(v float64) bool { return v > 0 }
	notNegative := func(v float64) bool { return v >= 0 }
	is := func(n float64) func(float64) bool { return func(v float64) bool { return v == n } }

	f := bench("fanout", "-sockets", "20", "-users", "10", "-rate", "20", "-duration", "1s")
	want("fanout", f, "messages_acked", is(20))
	want("fanout", f, "deliveries", is(20*20))
	want("fanout", f, "loss", is(0))
	want("fanout", f, "latency_p99_ms", positive)
	// Read from /proc in clock ticks (10 ms): 400 deliveries may cost the
	// gateway less than one, so the figure is checked present, not positive.
	want("fanout", f, "gateway_cpu_s", notNegative)

	f = bench("direct", "-pairs", "5", "-rate", "5", "-duration", "1s")
	want("direct", f, "messages_sent", is(25))
	want("direct", f, "stored_acked", is(25))
	want("direct", f, "delivered", is(25))
	want("direct", f, "refused", is(0))
	want("direct", f, "warmup_refused", is(0))
	want("direct", f, "send_to_receipt_p99_ms", positive)

	// With -resume the tool fails unless every socket gets its resumed.
	f = bench("connect", "-runs", "2", "-sockets", "30", "-users", "10", "-resume")
	want("connect", f, "gateway_cpu_s", notNegative)

	f = bench("idle", "-sockets", "30", "-users", "10", "-hold", "1s")
	want("idle", f, "gateway_rss_before_kib", positive)
	want("idle", f, "gateway_rss_after_kib", positive)
	want("idle", f, "kib_per_socket_upper", positive)
}
