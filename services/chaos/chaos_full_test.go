//go:build chaos

// The scenarios of `make chaos` alone (built with -tags chaos): longer
// than make test can spend.

package chaos_test

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/natter/natter/services/chaos"
	"github.com/natter/natter/services/chat"
)

// TestChaosNATSNodePause: each node of the cluster in turn, the CHAT
// stream's leader first, is stopped (SIGSTOP) for a while and let go
// (SIGCONT), under continuous sends.
func TestChaosNATSNodePause(t *testing.T) {
	s := seed(t, 3)
	st := chaos.StartStack(t, bin, chaos.Options{Cluster: true, Gateways: 2, Presence: 2, GatewayEnv: loadEnv})
	admin := st.Admin(t)
	users := chaos.Register(t, st.Gateways[0].URL, "np", 100)
	f := chaos.StartFleet(t, users, 1, st.GatewayURLs(), s)
	stop := loaded(f, chaos.Load{Rate: 20, Max: 100000, DM: 0.3, Filler: 40})
	defer stop()
	ackedAtLeast(t, f, 40, time.Minute)
	leader, err := chaos.StreamLeader(admin)
	if err != nil {
		t.Fatal(err)
	}
	order := []*chaos.Node{}
	for _, n := range st.Nodes {
		if n.Name == leader {
			order = append([]*chaos.Node{n}, order...)
		} else {
			order = append(order, n)
		}
	}
	for _, n := range order {
		n.Pause(t)
		pausedAt := time.Now()
		<-time.After(10 * time.Second) // the pause's length
		n.Continue(t)
		whole := func() error { return errors.Join(chaos.ClusterWhole(st.Nodes), chaos.StreamWhole(admin, 3)) }
		if !chaos.Eventually(time.Minute, func() bool { return whole() == nil }) {
			t.Fatalf("cluster not whole a minute after %s continued: %v", n.Name, whole())
		}
		t.Logf("paused %s at %s for 10 s; whole again at %s", n.Name, pausedAt.Format("15:04:05.000"), time.Now().Format("15:04:05.000"))
	}
	ackedAtLeast(t, f, f.Ledger.Acked()+40, time.Minute)
	r := finish(t, f, stop, "3. NATS node pause (leader first)", s)
	if r.AckP99 > recoverP99 {
		t.Errorf("send-to-ack p99 %s (the stall a sender sees), want under %s", r.AckP99, recoverP99)
	}
}

// TestChaosMongoDown: the dev stack's FerretDB is killed (-9) for 30 s
// and started again: live chats carry on, logins are refused with 503
// and Retry-After, and logins work again afterwards without restarts.
func TestChaosMongoDown(t *testing.T) {
	s := seed(t, 6)
	st := chaos.StartStack(t, bin, chaos.Options{Gateways: 2, GatewayEnv: loadEnv})
	users := chaos.Register(t, st.Gateways[0].URL, "md", 100)
	f := chaos.StartFleet(t, users, 1, st.GatewayURLs(), s)
	stop := loaded(f, chaos.Load{Rate: 20, Max: 100000, DM: 0.3, Filler: 40})
	defer stop()
	ackedAtLeast(t, f, 40, time.Minute)
	st.Mongo.Kill(t)
	downAt := time.Now()
	before := f.Ledger.Acked()
	var login probe
	// Auth notices on its next query; a login is its next query.
	chaos.Eventually(10*time.Second, func() bool {
		login = probeLogin(st.Gateways[0].URL, users[0].Account)
		return login.status != http.StatusOK
	})
	ackedAtLeast(t, f, before+40, 30*time.Second)
	<-time.After(time.Until(downAt.Add(30 * time.Second))) // the outage's length
	st.RestartMongo(t)
	r := finish(t, f, stop, "6. MongoDB (FerretDB) down 30 s", s)
	t.Logf("while MongoDB was down: login answered %d (Retry-After %q); refusals %v", login.status, login.retryAfter, f.Ledger.Refusals())
	if login.status != http.StatusServiceUnavailable || login.retryAfter == "" {
		t.Errorf("login while MongoDB is down: %d, Retry-After %q; want 503 with a Retry-After", login.status, login.retryAfter)
	}
	if r.AckP99 > recoverP99 {
		t.Errorf("send-to-ack p99 %s while MongoDB was down, want under %s", r.AckP99, recoverP99)
	}
	if !chaos.Eventually(30*time.Second, func() bool {
		_, err := chaos.Login(st.Gateways[0].URL, users[0].Account)
		return err == nil
	}) {
		t.Error("no login works 30 s after MongoDB returned")
	}
}

// TestChaosPresenceKill: the presence service is killed (-9) during a
// storm of sockets opening and closing, and started again once the storm
// is over: within 5 s of its restart, every socket shows exactly the
// users that have a socket open.
func TestChaosPresenceKill(t *testing.T) {
	s := seed(t, 4)
	st := chaos.StartStack(t, bin, chaos.Options{Gateways: 2, Presence: 1, GatewayEnv: loadEnv})
	const observers, stormers, cycles = 20, 60, 6
	users := chaos.Register(t, st.Gateways[0].URL, "pk", observers+stormers)
	watch := chaos.StartFleet(t, users[:observers], 1, st.GatewayURLs(), s)
	rng := chaos.NewRand(s)
	killAfter := 1 + rng.IntN(cycles-2) // a cycle of the storm's middle
	var wg sync.WaitGroup
	var stayed sync.Map // user id -> true: its last socket stays open
	killed := make(chan struct{})
	kill := sync.OnceFunc(func() { close(killed) })
	for i, u := range users[observers:] {
		wg.Go(func() { storm(t, st.GatewayURLs(), u, observers+i, s, cycles, killAfter, kill, &stayed) })
	}
	<-killed
	st.Presence[0].Kill(t)
	t.Logf("killed presence during the storm's cycle %d", killAfter)
	wg.Wait()
	st.Presence[0].Restart(t)
	restarted := time.Now()
	truth := map[string]bool{}
	for _, u := range users[:observers] {
		truth[u.ID] = true
	}
	stayed.Range(func(k, _ any) bool { truth[k.(string)] = true; return true })
	var wrong int
	var first string // the first wrong list seen, for the log
	converged := chaos.Eventually(40*time.Second, func() bool {
		wrong = 0
		for _, c := range watch.Clients {
			if on := c.Online(); !maps.Equal(on, truth) {
				wrong++
				if first == "" {
					first = presenceDiff(on, truth)
				}
			}
		}
		return wrong == 0
	})
	t.Logf("first wrong online list after the restart: %s", first)
	took := time.Since(restarted)
	record(t, chaos.Result{Scenario: "4. presence kill -9 in a connect storm", Seed: s, Clients: observers + stormers,
		Notes: []string{fmt.Sprintf("online lists right %.2f s after the restart", took.Seconds())}})
	t.Logf("every socket's online list was right %s after presence restarted", took)
	if !converged {
		t.Fatalf("%d of %d sockets show a wrong online list 30 s after presence restarted", wrong, observers)
	}
	if took > 5*time.Second {
		t.Errorf("online lists right only %s after presence restarted, want within 5 s", took)
	}
}

// presenceDiff counts the ghosts and the missing of a shown online list.
func presenceDiff(shown, truth map[string]bool) string {
	ghosts, missing := 0, 0
	for id := range shown {
		if !truth[id] {
			ghosts++
		}
	}
	for id := range truth {
		if !shown[id] {
			missing++
		}
	}
	return fmt.Sprintf("%d shown, %d online: %d ghosts, %d missing", len(shown), len(truth), ghosts, missing)
}

// storm opens and closes u's socket cycles times (leaving every other
// user's last one open); the first user to reach cycle killAfter calls
// kill.
func storm(t *testing.T, gws []string, u chaos.User, i int, s uint64, cycles, killAfter int, kill func(), stayed *sync.Map) {
	for cycle := range cycles {
		c := chaos.NewClient(i, u, gws, s+uint64(cycle), chaos.NewLedgerFor(i, u), chaos.NewDialer(0))
		c.Start()
		if !chaos.Eventually(30*time.Second, c.Live) {
			t.Errorf("storm client %d not live within 30 s", i)
		}
		if cycle == killAfter {
			kill()
		}
		if cycle == cycles-1 && i%2 == 0 {
			stayed.Store(u.ID, true)
			t.Cleanup(c.Stop)
			return
		}
		c.Stop()
	}
}

// diskSize is the disk-full scenario's filesystem: a few times what the
// stack stores in it before it is filled.
const diskSize = 64 << 20

// TestChaosDiskFull: NATS keeps JetStream on a small filesystem of its
// own (a tmpfs of diskSize), which something else fills up under
// continuous sends. Sends are refused with unavailable (and retried by
// the clients with the same id); nothing acknowledged is lost; when the
// space returns, sends are stored again and every retried send is
// acknowledged once, without restarting any natter service.
//
// nats-server (v2.15.2) keeps a stream's store write error until it
// restarts: a store that hit ENOSPC refuses writes after the space is
// back. So once the space returns, the scenario waits for sends to be
// acked by themselves and, when none is, restarts nats-server (SIGTERM,
// as an operator would); the note in the table says which it was.
func TestChaosDiskFull(t *testing.T) {
	s := seed(t, 8)
	store := chaos.SmallFS(t, diskSize)
	// The CHAT stream's own cap well inside the disk, as deploy/ has it
	// (its oldest messages go past it): here the disk fills from outside.
	env := append([]string{fmt.Sprintf("CHAT_MAX_BYTES=%d", diskSize/8)}, loadEnv...)
	st := chaos.StartStack(t, bin, chaos.Options{Gateways: 2, GatewayEnv: env, NATSStore: store})
	users := chaos.Register(t, st.Gateways[0].URL, "df", 60)
	f := chaos.StartFleet(t, users, 1, st.GatewayURLs(), s)
	stop := loaded(f, chaos.Load{Rate: 20, Max: 100000, DM: 0.3, Filler: 200})
	defer stop()
	ackedAtLeast(t, f, 40, time.Minute)

	refusedBefore := f.Ledger.Refusals()[chat.CodeUnavailable]
	filler := chaos.FillFS(t, store)
	fullAt := time.Now()
	ackedFull := f.Ledger.Acked()
	t.Logf("filesystem full at %s after %d acks", fullAt.Format("15:04:05.000"), ackedFull)
	if !chaos.Eventually(time.Minute, func() bool { return f.Ledger.Refusals()[chat.CodeUnavailable] >= refusedBefore+20 }) {
		t.Fatalf("disk full: only %d sends refused with %s within a minute (refusals %v)",
			f.Ledger.Refusals()[chat.CodeUnavailable]-refusedBefore, chat.CodeUnavailable, f.Ledger.Refusals())
	}
	// The disk stays full a while under sends.
	<-time.After(time.Until(fullAt.Add(15 * time.Second))) // the outage's length
	ackedWhileFull := f.Ledger.Acked() - ackedFull
	refused := f.Ledger.Refusals()[chat.CodeUnavailable] - refusedBefore

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freedAt := time.Now()
	before := f.Ledger.Acked()
	how := "by itself"
	if !chaos.Eventually(15*time.Second, func() bool { return f.Ledger.Acked() >= before+20 }) {
		how = "after nats-server restarted"
		n := st.Nodes[0]
		n.Stop(t)
		n.Restart(t)
		n.WaitHealthy(t)
	}
	ackedAtLeast(t, f, before+40, time.Minute)
	t.Logf("space back at %s; sends acked again %s at %s", freedAt.Format("15:04:05.000"), how, time.Now().Format("15:04:05.000"))
	finish(t, f, stop, "8. disk full (JetStream on a 64 MiB tmpfs)", s)
	t.Logf("note: disk full 15 s: %d sends refused with unavailable (retried), %d acked meanwhile; stored again %s once space returned",
		refused, ackedWhileFull, how)
	if free, err := chaos.FreeBytes(store); err == nil {
		t.Logf("filesystem free at the end: %d of %d bytes", free, diskSize)
	}
}

// partitionWait bounds how long the cut node's clients may take to move
// to the majority; the partition lasts until they all have, and at
// least partitionMin. (A NATS client notices a silent cut only when its
// pings go unanswered: with nats.go's defaults, 2 pings 2 minutes apart,
// that is 4 to 6 minutes.)
const (
	partitionWait = time.Minute
	partitionMin  = 30 * time.Second
)

// TestChaosPartition: the NATS node a gateway and a presence replica
// are connected to is cut off from the other two nodes and from every
// client (its network link down, silently), under continuous sends. The
// majority carries on; the cut node's clients move to it; nothing acked
// is lost; once the link is back the node rejoins.
//
// It runs in a network namespace of its own (the test binary re-run
// under unshare -n, see chaos.RunInOwnNetns), where each node has a
// namespace and a link of its own: no address but loopback is touched
// outside namespaces the test made.
func TestChaosPartition(t *testing.T) {
	if !chaos.InOwnNetns() {
		rs, out, err := chaos.RunInOwnNetns(t, "^TestChaosPartition$", 12*time.Minute)
		t.Logf("in a network namespace of its own:\n%s", out)
		for _, r := range rs {
			record(t, r)
		}
		if err != nil {
			t.Fatalf("partition scenario: %v", err)
		}
		if len(rs) == 0 {
			t.Fatal("partition scenario recorded nothing")
		}
		return
	}
	s := seed(t, 9)
	st := chaos.StartStack(t, bin, chaos.Options{Partitionable: true, Gateways: 2, Presence: 2, GatewayEnv: loadEnv})
	admin := st.Admin(t)
	users := chaos.Register(t, st.Gateways[0].URL, "pt", 100)
	f := chaos.StartFleet(t, users, 1, st.GatewayURLs(), s)
	stop := loaded(f, chaos.Load{Rate: 20, Max: 100000, DM: 0.3, Filler: 40})
	defer stop()
	ackedAtLeast(t, f, 40, time.Minute)
	cut, majority := cutNode(t, st.Nodes)
	leader, err := chaos.StreamLeader(admin)
	if err != nil {
		t.Fatal(err)
	}
	before := f.Ledger.Acked()
	cut.Cut(t)
	cutAt := time.Now()
	t.Logf("cut %s off at %s (CHAT leader %s)", cut.Name, cutAt.Format("15:04:05.000"), leader)
	onMajority := func() bool {
		gws, err1 := chaos.ClientsNamed(majority, "natter-gateway")
		pres, err2 := chaos.ClientsNamed(majority, "natter-presence")
		return err1 == nil && err2 == nil && gws == len(st.Gateways) && pres == len(st.Presence)
	}
	moved := chaos.Eventually(partitionWait, onMajority)
	movedAfter := time.Since(cutAt)
	// The majority stores sends all along.
	ackedAtLeast(t, f, before+40, time.Minute)
	<-time.After(time.Until(cutAt.Add(partitionMin))) // the partition's shortest length
	cut.Heal(t)
	gws, errG := chaos.ClientsNamed(majority, "natter-gateway")
	pres, errP := chaos.ClientsNamed(majority, "natter-presence")
	t.Logf("healed %s at %s; its clients on the majority: %v, %s after the cut (on the majority then: %d of %d gateways, %d of %d presence replicas; %v)",
		cut.Name, time.Now().Format("15:04:05.000"), moved, movedAfter.Round(time.Millisecond), gws, len(st.Gateways), pres, len(st.Presence), errors.Join(errG, errP))
	whole := func() error { return errors.Join(chaos.ClusterWhole(st.Nodes), chaos.StreamWhole(admin, 3)) }
	if !chaos.Eventually(2*time.Minute, func() bool { return whole() == nil }) {
		t.Fatalf("cluster not whole 2 minutes after the partition healed: %v", whole())
	}
	r := finish(t, f, stop, "9. partition of a NATS node", s)
	if !moved {
		t.Errorf("the cut node's clients (a gateway, a presence replica) not on the majority %s after the cut", partitionWait)
	}
	if r.AckP99 > recoverP99 {
		t.Errorf("send-to-ack p99 %s, want under %s", r.AckP99, recoverP99)
	}
}

// cutNode picks the node to cut off, and the others: one a gateway
// uses, and a presence replica too where one does. The services pick
// their node at random among all three, as in deploy/.
func cutNode(t *testing.T, nodes []*chaos.Node) (*chaos.Node, []*chaos.Node) {
	t.Helper()
	best, bestScore := -1, 0
	for i, n := range nodes {
		gws, err := chaos.ClientsNamed([]*chaos.Node{n}, "natter-gateway")
		if err != nil {
			t.Fatal(err)
		}
		pres, err := chaos.ClientsNamed([]*chaos.Node{n}, "natter-presence")
		if err != nil {
			t.Fatal(err)
		}
		if score := 2*min(gws, 1) + min(pres, 1); gws > 0 && score > bestScore {
			best, bestScore = i, score
		}
	}
	if best < 0 {
		t.Fatal("no node has a gateway connected")
	}
	var rest []*chaos.Node
	for i, n := range nodes {
		if i != best {
			rest = append(rest, n)
		}
	}
	t.Logf("cutting %s: a gateway%s uses it", nodes[best].Name, map[bool]string{true: " and a presence replica", false: ""}[bestScore == 3])
	return nodes[best], rest
}
