package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/natter/natter/services/config"
)

// The conversations scenario: users who each have many conversations
// (direct partners with a message each, rooms with a message each, the
// lobby), set up through the protocol; then the handshake rate of their
// sockets up to the conversations frame, against users who have none but
// the lobby, and the latency of the conversation list, after hello and
// on request.

// convFlags are the conversations scenario's settings.
type convFlags struct {
	common
	sockets, inFlight, dms, rooms int
	samples, requests, setupConc  int
	natsPID                       int
}

func (f *convFlags) parse(args []string, getenv func(string) string, stderr io.Writer) error {
	fs := config.New("natter-bench conversations", getenv, stderr)
	f.define(fs)
	fs.Int(&f.users, "users", "", 100, "users with many conversations; as many more with none (sockets are spread over them: keep sockets/users within SOCKETS_PER_USER)")
	fs.Int(&f.sockets, "sockets", "", 2000, "sockets of each handshake storm")
	fs.Int(&f.inFlight, "in-flight", "", defaultInFlight, "handshakes in flight at once")
	fs.Int(&f.dms, "dms", "", 150, "direct partners of each user, each with a message")
	fs.Int(&f.rooms, "rooms", "", 49, "rooms each user is in besides the lobby, each with a message")
	fs.Int(&f.samples, "samples", "", 100, "sockets opened one at a time to time hello -> conversations")
	fs.Int(&f.requests, "requests", "", 200, "conversations requests, one at a time, to time")
	fs.Int(&f.setupConc, "setup-concurrency", "", 32, "setup requests in flight at once")
	fs.Int(&f.natsPID, "nats-pid", "", 0, "pid of the NATS server (the dev stack's holds FerretDB too): its CPU per handshake is reported too")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	return errorsJoin(bound("users", f.users, 1, 5000), bound("sockets", f.sockets, 1, maxSockets),
		bound("in-flight", f.inFlight, 1, 1024), bound("dms", f.dms, 0, 1000), bound("rooms", f.rooms, 0, 199),
		bound("samples", f.samples, 0, 10000), bound("requests", f.requests, 0, 10000), bound("setup-concurrency", f.setupConc, 1, 256))
}

// as is the flags with another account prefix.
func (f *convFlags) as(suffix string) *common {
	c := f.common
	c.prefix += suffix
	return &c
}

func runConversations(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) (result, bool, error) {
	var f convFlags
	f.prefix = "bconv"
	if err := f.parse(args, getenv, stderr); err != nil {
		return result{}, false, err
	}
	limit := raiseFileLimit()
	heavy, err := f.as("-h").login(ctx, f.users, stderr)
	if err != nil {
		return result{}, false, err
	}
	partners, err := f.as("-p").login(ctx, f.dms, stderr)
	if err != nil {
		return result{}, false, err
	}
	empty, err := f.as("-e").login(ctx, f.users, stderr)
	if err != nil {
		return result{}, false, err
	}
	d := f.newDialer()
	r := result{Scenario: fmt.Sprintf("conversations: %d users with %d conversations each, %d sockets, %d at a time", f.users, 1+f.rooms+f.dms, f.sockets, f.inFlight), Figures: map[string]float64{}}
	have, err := ensureConversations(ctx, d, &f, heavy, partners, stderr)
	if err != nil {
		return result{}, false, err
	}
	r.Figures["conversations_per_user"] = float64(have)
	if err := measureConversations(ctx, d, &f, heavy, empty, &r); err != nil {
		return result{}, false, fmt.Errorf("%w (file limit %d)", err, limit)
	}
	r.gatewayPID = f.gatewayPID
	return r, f.json, nil
}

// measureConversations runs the two storms (many conversations, then
// none), then the timings one at a time.
func measureConversations(ctx context.Context, d *dialer, f *convFlags, heavy, empty []session, r *result) error {
	for _, s := range []struct {
		name     string
		sessions []session
	}{{"many", heavy}, {"none", empty}} {
		fig, err := storm(ctx, d, s.sessions, f.sockets, f.inFlight, f.gatewayPID, f.natsPID)
		if err != nil {
			return fmt.Errorf("storm (%s): %w", s.name, err)
		}
		for k, v := range fig {
			r.Figures[s.name+"_"+k] = v
		}
		quiesce(ctx, f.gatewayPID)
	}
	if none := r.Figures["none_handshakes_per_s"]; none > 0 {
		r.Figures["handshake_ratio_many_to_none"] = r.Figures["many_handshakes_per_s"] / none
	}
	lat, err := listAfterHello(ctx, d, heavy, f.samples)
	if err != nil {
		return err
	}
	putLatencies(r.Figures, "list_after_hello_", lat)
	lat, limited, err := listRequests(ctx, d, heavy[0], f.requests)
	if err != nil {
		return err
	}
	putLatencies(r.Figures, "list_request_", lat)
	r.Figures["list_requests_rate_limited"] = float64(limited)
	return nil
}

func putLatencies(figures map[string]float64, prefix string, l *latencies) {
	for k, v := range l.summary() {
		figures[prefix+k] = v
	}
}

// ensureConversations gives every heavy user 1 + rooms + dms
// conversations, unless the first and last have them already (a run
// before this one set them up), and says how many the first has.
func ensureConversations(ctx context.Context, d *dialer, f *convFlags, heavy, partners []session, stderr io.Writer) (int, error) {
	want := 1 + f.rooms + f.dms
	check := []session{heavy[0], heavy[len(heavy)-1]}
	n, err := fewestConversations(ctx, d, check)
	if err != nil || n >= want {
		return n, err
	}
	fmt.Fprintf(stderr, "conversations: setting up %d users x %d conversations\n", len(heavy), want)
	start := time.Now()
	if err := setupConversations(ctx, d, f, heavy, partners); err != nil {
		return 0, fmt.Errorf("setup: %w", err)
	}
	fmt.Fprintf(stderr, "conversations: set up in %s\n", time.Since(start).Round(time.Millisecond))
	n, err = fewestConversations(ctx, d, check)
	if err == nil && n < want {
		err = fmt.Errorf("setup left a user with %d conversations, want %d", n, want)
	}
	return n, err
}

// fewestConversations is the fewest conversations any of sessions has.
func fewestConversations(ctx context.Context, d *dialer, sessions []session) (int, error) {
	peers, err := openPeers(ctx, d, sessions, len(sessions), newRunID(), peerHooks{})
	if err != nil {
		return 0, err
	}
	defer closePeers(peers)
	fewest := -1
	for _, p := range peers {
		n, err := p.countConversations()
		if err != nil {
			return 0, err
		}
		if fewest < 0 || n < fewest {
			fewest = n
		}
	}
	return fewest, nil
}

// setupConversations: partners create the rooms the first heavy user is
// not in yet, every heavy user joins them all, the first writes in each,
// and every partner writes to every heavy user.
func setupConversations(ctx context.Context, d *dialer, f *convFlags, heavy, partners []session) error {
	runID := newRunID()
	hp, err := openPeers(ctx, d, heavy, f.setupConc, runID+"h", peerHooks{})
	if err != nil {
		return err
	}
	defer closePeers(hp)
	pp, err := openPeers(ctx, d, partners, f.setupConc, runID+"q", peerHooks{})
	if err != nil {
		return err
	}
	defer closePeers(pp)
	rooms := hp[0].rooms
	for j := 0; len(rooms) < f.rooms; j++ {
		if j >= len(pp) {
			return fmt.Errorf("%d partners cannot create %d rooms", len(pp), f.rooms)
		}
		id, err := pp[j].createRoom(fmt.Sprintf("bench conversations %d", len(rooms)))
		if err != nil {
			return err
		}
		rooms = append(rooms, id)
	}
	rooms = rooms[:f.rooms]
	if err := eachBounded(len(hp), f.setupConc, func(i int) error { return joinMissing(hp[i], rooms) }); err != nil {
		return err
	}
	for _, room := range rooms {
		if err := hp[0].post(fmt.Sprintf(`{"room":%q}`, room), "a message in this room"); err != nil {
			return err
		}
	}
	return eachBounded(len(pp), f.setupConc, func(j int) error {
		for _, h := range heavy {
			if err := pp[j].post(fmt.Sprintf(`{"user":%q}`, h.ID), "a direct message"); err != nil {
				return err
			}
		}
		return nil
	})
}

// joinMissing joins p to each of rooms its hello did not list.
func joinMissing(p *peer, rooms []string) error {
	in := map[string]bool{}
	for _, r := range p.rooms {
		in[r] = true
	}
	for _, r := range rooms {
		if !in[r] {
			if err := p.join(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// stormSocket is one handshake of a storm: dial until its conversations
// frame (or an error frame instead).
type stormSocket struct {
	hello, listed time.Time
	failed        string // the error code that came instead of the list
	done          chan struct{}
}

// storm opens sockets for sessions (round robin), inFlight at a time, each
// counted done at its conversations frame: the handshake rate a user
// sees the page ready at. It also times hello -> conversations under the
// storm, and the gateway's CPU per handshake.
func storm(ctx context.Context, d *dialer, sessions []session, sockets, inFlight, gatewayPID, natsPID int) (map[string]float64, error) {
	conns := make([]io.Closer, sockets)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	lat := newLatencies(sockets)
	var failed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	cpu0, natsCPU0, start := cpuSeconds(gatewayPID), cpuSeconds(natsPID), time.Now()
	_ = eachBounded(sockets, inFlight, func(i int) error {
		s, conn, err := stormOne(ctx, d, sessions[i%len(sessions)], i)
		conns[i] = conn
		switch {
		case err != nil:
			errOnce.Do(func() { firstErr = err })
		case s.failed != "":
			failed.Add(1)
		default:
			lat.add(i, s.listed.Sub(s.hello))
		}
		return nil
	})
	elapsed := time.Since(start)
	if firstErr != nil {
		return nil, firstErr
	}
	fig := map[string]float64{
		"handshakes_per_s": float64(sockets) / elapsed.Seconds(),
		"lists_refused":    float64(failed.Load()),
	}
	putLatencies(fig, "storm_list_", lat)
	if cpu := cpuSeconds(gatewayPID) - cpu0; gatewayPID > 0 && cpu > 0 {
		fig["cpu_ms_per_handshake"] = 1000 * cpu / float64(sockets)
	}
	if cpu := cpuSeconds(natsPID) - natsCPU0; natsPID > 0 && cpu > 0 {
		fig["nats_cpu_ms_per_handshake"] = 1000 * cpu / float64(sockets)
	}
	return fig, nil
}

// stormOne dials socket i and waits for its conversations frame; the
// reader looks at each object's start only (the list is not decoded).
func stormOne(ctx context.Context, d *dialer, s session, i int) (*stormSocket, io.Closer, error) {
	conn, err := d.dial(ctx, s, i)
	if err != nil {
		return nil, nil, err
	}
	st := &stormSocket{done: make(chan struct{})}
	go func() {
		var once sync.Once
		_ = readLines(conn, func(line []byte, at time.Time) {
			switch {
			case bytes.HasPrefix(line, []byte(`{"type":"hello"`)):
				st.hello = at
			case bytes.HasPrefix(line, []byte(`{"type":"conversations"`)):
				once.Do(func() { st.listed = at; close(st.done) })
			case bytes.HasPrefix(line, []byte(`{"type":"error"`)):
				var f rframe
				_ = json.Unmarshal(line, &f)
				once.Do(func() { st.failed = f.Code; close(st.done) })
			}
		}, nil)
	}()
	return st, conn, waitSignal(st.done, "conversations", i)
}

// listAfterHello opens n sockets one at a time (the sessions in turn) and
// times hello -> conversations for each, with nothing else going on.
func listAfterHello(ctx context.Context, d *dialer, sessions []session, n int) (*latencies, error) {
	lat := newLatencies(1)
	for i := range n {
		s, conn, err := stormOne(ctx, d, sessions[i%len(sessions)], i)
		if conn != nil {
			_ = conn.Close()
		}
		if err != nil {
			return nil, err
		}
		if s.failed != "" {
			return nil, fmt.Errorf("conversations after hello refused: %s", s.failed)
		}
		lat.add(0, s.listed.Sub(s.hello))
	}
	return lat, nil
}

// listRequests asks one socket of s for its conversations n times, one
// at a time, and times each request -> answer. Requests refused for the
// send rate are counted, not timed, and asked again after a pause.
func listRequests(ctx context.Context, d *dialer, s session, n int) (*latencies, int, error) {
	lat := newLatencies(1)
	peers, err := openPeers(ctx, d, []session{s}, 1, newRunID(), peerHooks{})
	if err != nil {
		return nil, 0, err
	}
	defer closePeers(peers)
	p := peers[0]
	if err := waitSignal(p.listed, "conversations", 0); err != nil {
		return nil, 0, err
	}
	limited := 0
	for done := 0; done < n && ctx.Err() == nil; {
		id := p.newID()
		sent := time.Now()
		f, err := p.askOnce(fmt.Sprintf(`{"type":"conversations","id":%q}`, id), []string{"id:" + id})
		switch {
		case err != nil:
			return nil, limited, err
		case f.Type == "error" && f.Code == "rate_limited" && limited < n:
			limited++
			time.Sleep(250 * time.Millisecond)
		case f.Type != "conversations":
			return nil, limited, fmt.Errorf("conversations request answered with %s %s", f.Type, f.Code)
		default:
			lat.add(0, f.at.Sub(sent))
			done++
		}
	}
	return lat, limited, nil
}
