package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The partition scenario needs a network to cut, and the suite touches no
// network but loopback outside namespaces it created. So the test binary
// runs that scenario again in a network namespace of its own (unshare -n:
// a loopback of its own, nothing else), where the services and the
// clients live on its loopback as elsewhere, and each NATS node runs in a
// namespace of its own joined to it by a veth pair: node i is 10.77.i.2,
// its link's end here 10.77.i.1, and this namespace routes between the
// nodes. Cutting a node's link cuts it off from the other two nodes and
// from every client at once, silently, as a pulled cable does.

// netnsChildEnv marks the test binary re-run in its own namespace.
const netnsChildEnv = "CHAOS_NETNS_CHILD"

// childResultEnv names the file a re-run writes its scenario's results to.
const childResultEnv = "CHAOS_CHILD_RESULT"

// InOwnNetns reports whether this process is the test binary re-run by
// RunInOwnNetns.
func InOwnNetns() bool { return os.Getenv(netnsChildEnv) != "" }

// RunInOwnNetns runs the tests matching run of this test binary again,
// in a new network namespace, and returns what they recorded (see
// WriteChildResults) and their output. It needs CAP_SYS_ADMIN and
// CAP_NET_ADMIN (root); without them it fails saying so.
func RunInOwnNetns(t testing.TB, run string, timeout time.Duration) ([]Result, string, error) {
	t.Helper()
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return nil, "", fmt.Errorf("the partition scenario needs unshare(1) (util-linux): %w", err)
	}
	dir := t.TempDir()
	results := filepath.Join(dir, "results.json")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, unshare, "--net", "--", os.Args[0],
		"-test.run", run, "-test.v", "-test.count=1", "-test.timeout", timeout.String())
	cmd.Env = append(os.Environ(), netnsChildEnv+"=1", childResultEnv+"="+results,
		"CHAOS_REPORT="+filepath.Join(dir, "report.md"))
	cmd.WaitDelay = 10 * time.Second
	out, runErr := cmd.CombinedOutput()
	var rs []Result
	if b, err := os.ReadFile(results); err == nil {
		if err := json.Unmarshal(b, &rs); err != nil {
			runErr = errors.Join(runErr, fmt.Errorf("results of the re-run: %w", err))
		}
	}
	if runErr != nil && strings.Contains(string(out), "unshare failed") {
		runErr = fmt.Errorf("%w: a network namespace of its own needs CAP_SYS_ADMIN (root here); the partition scenario cannot run without one", runErr)
	}
	return rs, string(out), runErr
}

// WriteChildResults writes rs for RunInOwnNetns to read, when this process
// is its re-run.
func WriteChildResults(rs []Result) error {
	path := os.Getenv(childResultEnv)
	if path == "" {
		return nil
	}
	b, err := json.Marshal(rs)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// Netns is the namespaces of a partitionable cluster, made from the
// namespace RunInOwnNetns runs the test in.
type Netns struct {
	ip     string // ip(8)
	prefix string // of the node namespaces' names, unique to this process
}

// NewNetns readies this process's own namespace (loopback up, routing
// between the nodes' links): only in a re-run of RunInOwnNetns, never in
// the machine's namespace.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	if !InOwnNetns() {
		t.Fatal("a partitionable cluster is made only in a network namespace of the suite's own (RunInOwnNetns)")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatalf("the partition scenario needs ip(8) (iproute2): %v", err)
	}
	n := &Netns{ip: ip, prefix: fmt.Sprintf("natter-chaos-%d", os.Getpid())}
	n.run(t, "link", "set", "lo", "up")
	// Per namespace: this one routes between the nodes' links.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		t.Fatalf("routing in the suite's namespace: %v", err)
	}
	return n
}

// run runs ip with args, failing t if it fails.
func (n *Netns) run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(n.ip, args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
}

// node makes node i's namespace and link, and returns the node's
// addresses in it; the namespace is deleted when the test ends (after
// the node is stopped: cleanups run last first).
func (n *Netns) node(t testing.TB, i int) *Node {
	t.Helper()
	ns := fmt.Sprintf("%s-n%d", n.prefix, i)
	link := fmt.Sprintf("nv%d", i)
	here, there := fmt.Sprintf("10.77.%d.1", i), fmt.Sprintf("10.77.%d.2", i)
	n.run(t, "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command(n.ip, "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	})
	n.run(t, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
	n.run(t, "addr", "add", here+"/24", "dev", link)
	n.run(t, "link", "set", link, "up")
	n.run(t, "-n", ns, "link", "set", "lo", "up")
	n.run(t, "-n", ns, "addr", "add", there+"/24", "dev", "eth0")
	n.run(t, "-n", ns, "link", "set", "eth0", "up")
	n.run(t, "-n", ns, "route", "add", "default", "via", here)
	return &Node{
		Name: fmt.Sprintf("nats-%d", i), Client: there + ":4222", HTTP: there + ":8222", Route: there + ":6222",
		netns: ns, link: link, net: n,
	}
}

// Cut takes the node's link down: nothing reaches it or leaves it, and
// nobody is told (no reset, no close), until Heal.
func (n *Node) Cut(t testing.TB) {
	t.Helper()
	if n.net == nil {
		t.Fatalf("%s runs in no namespace of its own: nothing to cut", n.Name)
	}
	n.net.run(t, "link", "set", n.link, "down")
}

// Heal brings the node's link back up.
func (n *Node) Heal(t testing.TB) {
	t.Helper()
	if n.net == nil {
		t.Fatalf("%s runs in no namespace of its own: nothing to heal", n.Name)
	}
	n.net.run(t, "link", "set", n.link, "up")
}

// ClientsNamed counts, over nodes, the client connections named name
// (natter-gateway, natter-presence, natter-auth): where the services are
// connected.
func ClientsNamed(nodes []*Node, name string) (int, error) {
	count := 0
	for _, n := range nodes {
		var connz struct {
			Conns []struct {
				Name string `json:"name"`
			} `json:"connections"`
		}
		if err := getJSON("http://"+n.HTTP+"/connz?limit=4096", &connz); err != nil {
			return 0, fmt.Errorf("%s: %w", n.Name, err)
		}
		for _, c := range connz.Conns {
			if c.Name == name {
				count++
			}
		}
	}
	return count, nil
}
