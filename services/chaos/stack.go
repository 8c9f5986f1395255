package chaos

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/natter/natter/services/servicetest"
)

// readyWait bounds how long a process may take to answer its health
// check after a start or restart.
const readyWait = 60 * time.Second

// Options shape a stack.
type Options struct {
	// Cluster runs NATS as the 3-node cluster of deploy/nats (R3 streams,
	// a user per service); otherwise one nats-server of the dev stack.
	Cluster bool
	// Partitionable puts each node of the cluster in a network namespace
	// of its own, so it can be cut off (Node.Cut); only in a test re-run
	// by RunInOwnNetns.
	Partitionable bool
	// Gateways and Presence are how many of each run (at least 1).
	Gateways int
	Presence int
	// GatewayEnv is added to every gateway's environment (limits).
	GatewayEnv []string
	// NATSStore, if set, is the single node's data directory (a small
	// filesystem, for the disk-full scenario).
	NATSStore string
}

// Stack is natter running as separate processes on loopback.
type Stack struct {
	Bin   string
	Nodes []*Node // NATS: one (dev stack) or three (cluster)
	Mongo *Proc   // the dev stack's FerretDB
	Auth  *Proc
	// AuthURL and the gateways' URLs are http://host:port.
	AuthURL  string
	Presence []*Proc
	Gateways []*Gateway
	cluster  bool
	allURLs  bool // services get every node's URL (see creds)
	mongoURI string
}

// Gateway is one gateway process and its base URL.
type Gateway struct {
	*Proc
	URL string
}

// StartStack starts NATS, FerretDB, auth, presence and the gateways, and
// waits until every one is ready.
func StartStack(t testing.TB, bin string, o Options) *Stack {
	t.Helper()
	s := &Stack{Bin: bin, cluster: o.Cluster, allURLs: o.Partitionable}
	switch {
	case o.Partitionable:
		s.cluster = true
		s.Nodes = startCluster(t, bin, NewNetns(t))
	case o.Cluster:
		s.Nodes = StartCluster(t, bin)
	default:
		s.Nodes = []*Node{startSingleNode(t, bin, o.NATSStore)}
	}
	s.startMongo(t)
	addrs := servicetest.FreeAddrs(t, 1+max(1, o.Presence)+max(1, o.Gateways))
	s.AuthURL = "http://" + addrs[0]
	s.Auth = StartProc(t, "auth", filepath.Join(bin, "auth"), nil, append(s.creds("auth", 0),
		"HTTP_ADDR="+addrs[0], "MONGO_URI="+s.mongoURI, "TRUSTED_PROXIES=127.0.0.1",
		"AUTH_SIGNING_KEY_FILE="+filepath.Join(t.TempDir(), "key.pem"), "AUTH_GENERATE_SIGNING_KEY=true",
		// Users are made before anything is measured: cheap hashes, and
		// limits a test's hundreds of registrations would hit raised.
		"ARGON2_MEMORY_KIB=64", "ARGON2_ITERATIONS=1", "HASH_WORKERS=4",
		"REGISTRATIONS_PER_ADDRESS=1000000", "LOGIN_FAILURES_PER_ADDRESS=1000000")...)
	s.Auth.Listens(addrs[0])
	waitReady(t, s.AuthURL)
	for i := range max(1, o.Presence) {
		addr := addrs[1+i]
		p := StartProc(t, fmt.Sprintf("presence-%d", i), filepath.Join(bin, "presence"), nil,
			append(s.creds("presence", i), "HTTP_ADDR="+addr)...)
		p.Listens(addr)
		s.Presence = append(s.Presence, p)
		waitReady(t, "http://"+addr)
	}
	for i := range max(1, o.Gateways) {
		addr := addrs[1+max(1, o.Presence)+i]
		env := append(s.creds("gateway", i), "HTTP_ADDR="+addr, "AUTH_URL="+s.AuthURL)
		env = append(env, o.GatewayEnv...)
		g := &Gateway{Proc: StartProc(t, fmt.Sprintf("gateway-%c", 'a'+i), filepath.Join(bin, "gateway"), nil, env...), URL: "http://" + addr}
		g.Listens(addr)
		s.Gateways = append(s.Gateways, g)
		waitReady(t, g.URL)
	}
	return s
}

// creds is a service's NATS settings; on the cluster, instance i of a
// service connects to node i mod 3 first and learns the others from it,
// so a scenario knows which node each uses. Where nodes can be cut off
// (Partitionable) every node's URL is given instead, as deploy/ gives
// them: a client that learned the others from one node forgets them when
// that node loses its routes (its updated list names itself alone), and
// cannot leave it; the services then pick a node at random.
func (s *Stack) creds(user string, i int) []string {
	url := s.Nodes[i%len(s.Nodes)].URL()
	if s.allURLs {
		url = s.NATSURL()
	}
	env := []string{"LOG_FORMAT=json", "LOG_LEVEL=warn", "NATS_URL=" + url}
	if s.cluster {
		env = append(env, "NATS_USER="+user, "NATS_PASSWORD="+natsPasswords[user], "JS_REPLICAS=3")
	}
	return env
}

// NATSURL is every node's client URL, comma-separated.
func (s *Stack) NATSURL() string {
	var urls []string
	for _, n := range s.Nodes {
		urls = append(urls, n.URL())
	}
	return strings.Join(urls, ",")
}

// GatewayURLs are the gateways' base URLs, in order.
func (s *Stack) GatewayURLs() []string {
	var out []string
	for _, g := range s.Gateways {
		out = append(out, g.URL)
	}
	return out
}

// startMongo runs the dev stack's FerretDB alone (no NATS) in its own
// process, so it can be killed and restarted with its data.
func (s *Stack) startMongo(t testing.TB) {
	t.Helper()
	addr := servicetest.FreeAddrs(t, 1)[0]
	s.mongoURI = "mongodb://" + addr + "/"
	s.Mongo = StartProc(t, "ferretdb", filepath.Join(s.Bin, "devstack"),
		[]string{"-nats-addr", "", "-monitor-addr", "", "-mongo-addr", addr, "-data", t.TempDir()}, "LOG_LEVEL=warn")
	s.Mongo.Listens(addr)
	WaitTCP(t, addr)
}

// RestartMongo starts FerretDB again on its address with its data.
func (s *Stack) RestartMongo(t testing.TB) {
	t.Helper()
	s.Mongo.Restart(t)
	WaitTCP(t, strings.TrimSuffix(strings.TrimPrefix(s.mongoURI, "mongodb://"), "/"))
}

// waitReady polls base's /readyz until it answers 200.
func waitReady(t testing.TB, base string) {
	t.Helper()
	servicetest.WaitStatus(t, base+"/readyz", http.StatusOK, readyWait)
}

// WaitReady polls a restarted service's /readyz until it answers 200.
func WaitReady(t testing.TB, base string) { waitReady(t, base) }

// WaitTCP polls addr until it accepts a connection.
func WaitTCP(t testing.TB, addr string) {
	t.Helper()
	if !Eventually(readyWait, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	}) {
		t.Fatalf("%s accepts no connection after %s", addr, readyWait)
	}
}
