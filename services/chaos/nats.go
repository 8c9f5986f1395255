package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/servicetest"
)

// natsPasswords are the cluster's users' passwords, given to the servers
// and services as deploy/nats/accounts.conf expects them.
var natsPasswords = map[string]string{
	"gateway": "gw-secret", "auth": "auth-secret", "presence": "pres-secret",
	"watch": "watch-secret", "admin": "admin-secret", "sys": "sys-secret",
}

// NATSPassword is the password of user (gateway, auth, presence, watch,
// admin, sys) in the clusters StartCluster runs.
func NATSPassword(user string) string { return natsPasswords[user] }

// Node is one nats-server process.
type Node struct {
	*Proc
	Name   string
	Client string // host:port
	HTTP   string // monitoring host:port
	// Route is the cluster address (empty on a single node).
	Route string
	// netns is the node's network namespace and link its end of the
	// veth pair to it, when it has one (see Netns).
	netns, link string
	net         *Netns
}

// URL is the node's client URL.
func (n *Node) URL() string { return "nats://" + n.Client }

// WaitHealthy polls the node's /healthz (JetStream included) until 200.
func (n *Node) WaitHealthy(t testing.TB) {
	t.Helper()
	servicetest.WaitStatus(t, "http://"+n.HTTP+"/healthz", 200, readyWait)
}

// startSingleNode runs one nats-server with JetStream in store (a temp
// dir when empty), without accounts, as the dev stack does. In a store
// of the test's choosing (a small filesystem) it writes as deploy/nats
// does, every message synced before it is acknowledged, so what the
// suite finds acked was on the disk.
func startSingleNode(t testing.TB, bin, store string) *Node {
	t.Helper()
	sync := ""
	if store == "" {
		store = t.TempDir()
	} else {
		sync = "  sync_interval: always\n"
	}
	addrs := servicetest.FreeAddrs(t, 2)
	n := &Node{Name: "nats", Client: addrs[0], HTTP: addrs[1]}
	conf := fmt.Sprintf("server_name: nats\nlisten: %s\nhttp: %s\nmax_payload: 1MB\njetstream {\n  store_dir: %q\n%s}\n",
		n.Client, n.HTTP, filepath.Join(store, "jetstream"), sync)
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	n.Proc = StartProc(t, n.Name, filepath.Join(bin, "nats-server"), []string{"-c", path})
	n.Listens(n.Client, n.HTTP)
	n.WaitHealthy(t)
	return n
}

// StartCluster starts the 3-node cluster of deploy/nats: the
// deployment's own files, with only addresses and the store directory
// changed, and waits until every node is healthy.
func StartCluster(t testing.TB, bin string) []*Node {
	t.Helper()
	return startCluster(t, bin, nil)
}

// startCluster is StartCluster with, when net is not nil, each node in a
// network namespace of its own (see Netns).
func startCluster(t testing.TB, bin string, net *Netns) []*Node {
	t.Helper()
	src, err := os.ReadFile("../../deploy/nats/nats.conf")
	if err != nil {
		t.Fatal(err)
	}
	accounts, err := os.ReadFile("../../deploy/nats/accounts.conf")
	if err != nil {
		t.Fatal(err)
	}
	nodes := make([]*Node, 3)
	if net != nil {
		for i := range nodes {
			nodes[i] = net.node(t, i)
		}
	} else {
		addrs := servicetest.FreeAddrs(t, 9)
		for i := range nodes {
			nodes[i] = &Node{Name: fmt.Sprintf("nats-%d", i), Client: addrs[i], HTTP: addrs[3+i], Route: addrs[6+i]}
		}
	}
	for _, n := range nodes {
		dir := t.TempDir()
		conf, err := nodeConf(string(src), n, nodes, dir)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "accounts.conf"), accounts, 0o600); err != nil {
			t.Fatal(err)
		}
		server, args := filepath.Join(bin, "nats-server"), []string{"-c", path}
		if n.netns != "" {
			server, args = net.ip, append([]string{"netns", "exec", n.netns, server}, args...)
		}
		n.Proc = StartProc(t, n.Name, server, args, natsServerEnv(n.Name)...)
		if n.netns == "" { // in a namespace of its own its ports are its own
			n.Listens(n.Client, n.HTTP, n.Route)
		}
	}
	for _, n := range nodes {
		n.WaitHealthy(t)
	}
	return nodes
}

// nodeConf is deploy/nats/nats.conf for node n on loopback, storing in dir.
func nodeConf(src string, n *Node, nodes []*Node, dir string) (string, error) {
	conf := src
	for _, r := range []struct{ old, new string }{
		{"listen: 0.0.0.0:4222", "listen: " + n.Client},
		{"http: 0.0.0.0:8222", "http: " + n.HTTP},
		{"store_dir: /data/jetstream", fmt.Sprintf("store_dir: %q", filepath.Join(dir, "jetstream"))},
		{"listen: 0.0.0.0:6222", "listen: " + n.Route},
		{"nats://nats-0.nats:6222", "nats://" + nodes[0].Route},
		{"nats://nats-1.nats:6222", "nats://" + nodes[1].Route},
		{"nats://nats-2.nats:6222", "nats://" + nodes[2].Route},
	} {
		if strings.Count(conf, r.old) != 1 {
			return "", fmt.Errorf("deploy/nats/nats.conf no longer has %q once: update the chaos suite with it", r.old)
		}
		conf = strings.Replace(conf, r.old, r.new, 1)
	}
	return conf, nil
}

func natsServerEnv(name string) []string {
	env := []string{"SERVER_NAME=" + name}
	for user, pw := range natsPasswords {
		env = append(env, "NATS_"+strings.ToUpper(user)+"_PASSWORD="+pw)
	}
	return env
}

// Admin connects to the stack's NATS as its administrator (the admin
// user on the cluster), to read stream state; closed when the test ends.
func (s *Stack) Admin(t testing.TB) jetstream.JetStream {
	t.Helper()
	opts := []nats.Option{nats.Name("chaos-admin"), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}
	if s.cluster {
		opts = append(opts, nats.UserInfo("admin", natsPasswords["admin"]))
	}
	nc, err := nats.Connect(s.NATSURL(), opts...)
	if err != nil {
		t.Fatalf("admin connection: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// StreamLeader is the name of the node leading the CHAT stream.
func StreamLeader(js jetstream.JetStream) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, chat.StreamName)
	if err != nil {
		return "", fmt.Errorf("stream info: %w", err)
	}
	info := st.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", fmt.Errorf("stream %s has no leader now", chat.StreamName)
	}
	return info.Cluster.Leader, nil
}

// Streams are every stream and bucket of the cluster, by stream name (as
// deploy/nats/accounts.conf gives the admin user them).
func Streams() []string {
	return []string{"CHAT", "PRESENCE", "KV_presence", "KV_revoked", "KV_user_quota", "KV_read_state", "KV_rooms", "KV_auth_limits"}
}

// LeadersOff moves the leadership of every stream of names led by node
// to another node (stepdowns, each asked again until it took; bounded).
// A stream that does not exist is skipped.
func LeadersOff(js jetstream.JetStream, node string, names []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range names {
		if _, err := js.Stream(ctx, name); errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		for attempt := 0; ; attempt++ {
			st, err := js.Stream(ctx, name)
			if err == nil && st.CachedInfo().Cluster != nil {
				if l := st.CachedInfo().Cluster.Leader; l != "" && l != node {
					break
				}
			}
			if attempt == 10 {
				return fmt.Errorf("stream %s still led by %s after %d stepdowns (%v)", name, node, attempt, err)
			}
			if err == nil && st.CachedInfo().Cluster != nil && st.CachedInfo().Cluster.Leader == node {
				_, _ = js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+name, nil)
			}
			Eventually(5*time.Second, func() bool {
				st, err := js.Stream(ctx, name)
				return err == nil && st.CachedInfo().Cluster != nil && st.CachedInfo().Cluster.Leader != ""
			})
		}
	}
	return nil
}

// StreamWhole reports nil once the CHAT stream has a leader and every
// replica is current.
func StreamWhole(js jetstream.JetStream, replicas int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, chat.StreamName)
	if err != nil {
		return fmt.Errorf("stream info: %w", err)
	}
	info := st.CachedInfo()
	if replicas <= 1 {
		return nil
	}
	if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != replicas-1 {
		return fmt.Errorf("CHAT cluster %+v: want a leader and %d replicas", info.Cluster, replicas-1)
	}
	for _, r := range info.Cluster.Replicas {
		if !r.Current || r.Offline {
			return fmt.Errorf("CHAT replica %s current=%v offline=%v", r.Name, r.Current, r.Offline)
		}
	}
	return nil
}

// ClusterWhole reports nil once every node answers /healthz with 200
// (JetStream current on it) and the JetStream meta group has a leader
// and every peer current: what an operator waits for before touching
// the next node.
func ClusterWhole(nodes []*Node) error {
	for _, n := range nodes {
		if err := getJSON("http://"+n.HTTP+"/healthz", nil); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
	}
	// Only the meta leader knows whether its followers are current.
	for _, n := range nodes {
		var jsz metaInfo
		if err := getJSON("http://"+n.HTTP+"/jsz", &jsz); err != nil {
			return fmt.Errorf("%s /jsz: %w", n.Name, err)
		}
		if jsz.Meta == nil || jsz.Meta.Leader == "" {
			return fmt.Errorf("%s knows no JetStream meta leader", n.Name)
		}
		if jsz.Meta.Leader != n.Name {
			continue
		}
		if len(jsz.Meta.Replicas) != len(nodes)-1 {
			return fmt.Errorf("meta group has %d followers, want %d", len(jsz.Meta.Replicas), len(nodes)-1)
		}
		for _, r := range jsz.Meta.Replicas {
			if !r.Current || r.Offline {
				return fmt.Errorf("meta peer %s current=%v offline=%v", r.Name, r.Current, r.Offline)
			}
		}
		return nil
	}
	return errors.New("no node is the meta leader")
}

// MetaLeader is the name of the node leading the JetStream meta group,
// as the first node that answers knows it.
func MetaLeader(nodes []*Node) (string, error) {
	var errs []error
	for _, n := range nodes {
		var jsz metaInfo
		if err := getJSON("http://"+n.HTTP+"/jsz", &jsz); err != nil {
			errs = append(errs, fmt.Errorf("%s /jsz: %w", n.Name, err))
			continue
		}
		if jsz.Meta == nil || jsz.Meta.Leader == "" {
			errs = append(errs, fmt.Errorf("%s knows no JetStream meta leader", n.Name))
			continue
		}
		return jsz.Meta.Leader, nil
	}
	return "", errors.Join(errs...)
}

// metaInfo is what ClusterWhole reads of a node's /jsz.
type metaInfo struct {
	Meta *struct {
		Leader   string `json:"leader"`
		Replicas []struct {
			Name    string `json:"name"`
			Current bool   `json:"current"`
			Offline bool   `json:"offline"`
		} `json:"replicas"`
	} `json:"meta_cluster"`
}

// getJSON gets url, wants 200, and decodes the body into v (if not nil).
func getJSON(url string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	if v == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
