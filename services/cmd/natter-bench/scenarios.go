package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/natter/natter/services/config"
)

// settle is how long sockets wait after connecting before anything is
// timed: the gateway holds live messages up to 1 s for a possible resume.
const settle = 1500 * time.Millisecond

// socket is one open bench socket with its reader.
type socket struct {
	conn     *websocket.Conn
	hello    chan struct{} // closed at hello
	helloSeq uint64        // set before hello closes
	resumed  chan struct{} // closed at resumed
	wmu      sync.Mutex
}

func (s *socket) send(v string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.conn.WriteMessage(websocket.TextMessage, []byte(v))
}

// openAll opens n sockets for the sessions (round robin), each with its
// reader calling onFrame, and waits for every hello.
func openAll(ctx context.Context, d *dialer, sessions []session, n int, onFrame func(i int, f frame, at time.Time)) ([]*socket, error) {
	return openAllWith(ctx, d, sessions, n, defaultInFlight, false, onFrame)
}

// defaultInFlight is how many handshakes the tool has in flight at once.
const defaultInFlight = 64

// openAllWith is openAll with inFlight handshakes at a time; with resume,
// each socket's first frame is a resume from its hello's seq, as a
// reconnecting browser sends, and the handshake ends at resumed.
func openAllWith(ctx context.Context, d *dialer, sessions []session, n, inFlight int, resume bool, onFrame func(i int, f frame, at time.Time)) ([]*socket, error) {
	socks := make([]*socket, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, inFlight)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			conn, err := d.dial(ctx, sessions[i%len(sessions)], i)
			if err != nil {
				errs <- err
				return
			}
			s := &socket{conn: conn, hello: make(chan struct{}), resumed: make(chan struct{})}
			socks[i] = s
			go func() {
				var helloOnce, resumedOnce sync.Once
				_ = readFrames(conn, func(f frame, at time.Time) {
					switch f.Type {
					case "hello":
						helloOnce.Do(func() { s.helloSeq = f.Seq; close(s.hello) })
					case "resumed":
						resumedOnce.Do(func() { close(s.resumed) })
					}
					if onFrame != nil {
						onFrame(i, f, at)
					}
				})
			}()
			if err := waitSignal(s.hello, "hello", i); err != nil {
				errs <- err
				return
			}
			if !resume {
				return
			}
			if err := s.send(fmt.Sprintf(`{"type":"resume","after":%d}`, s.helloSeq)); err != nil {
				errs <- fmt.Errorf("socket %d: resume: %w", i, err)
				return
			}
			if err := waitSignal(s.resumed, "resumed", i); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		closeAll(socks)
		return nil, err
	}
	return socks, nil
}

// waitSignal waits for ch, at most 30 s.
func waitSignal(ch <-chan struct{}, what string, i int) error {
	select {
	case <-ch:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("socket %d: no %s within 30s", i, what)
	}
}

func closeAll(socks []*socket) {
	for _, s := range socks {
		if s != nil {
			_ = s.conn.Close()
		}
	}
}

func runFanout(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) (result, bool, error) {
	var c common
	var sockets, rate int
	var duration time.Duration
	fs := config.New("natter-bench fanout", getenv, stderr)
	c.define(fs)
	fs.Int(&sockets, "sockets", "", 1000, "sockets in the room (the sender's included)")
	fs.Int(&c.users, "users", "", 1000, "distinct users the sockets belong to")
	fs.Int(&rate, "rate", "", 100, "messages per second from the sender")
	fs.Duration(&duration, "duration", "", 10*time.Second, "how long to send")
	if err := fs.Parse(args[1:]); err != nil {
		return result{}, false, err
	}
	if err := errorsJoin(bound("sockets", sockets, 1, maxSockets), bound("rate", rate, 1, maxRate), bound("users", c.users, 1, maxSockets)); err != nil {
		return result{}, false, err
	}
	duration = min(duration, maxDuration)
	limit := raiseFileLimit()
	sessions, err := c.login(ctx, min(c.users, sockets), stderr)
	if err != nil {
		return result{}, false, err
	}
	var received atomic.Int64
	lat := newLatencies(sockets)
	var acked atomic.Int64
	var refused refusals
	// Message ids unique to this run: no dedupe across runs, and messages
	// of another run (still in flight, or a concurrent one) do not count.
	runID := newRunID()
	socks, err := openAll(ctx, c.newDialer(), sessions, sockets, func(i int, f frame, at time.Time) {
		switch f.Type {
		case "message":
			if !strings.HasPrefix(f.ID, runID) {
				return
			}
			if ts, ok := unstamp(f.Text); ok {
				received.Add(1)
				lat.add(i, at.Sub(ts))
			}
		case "ack":
			if i == 0 {
				acked.Add(1)
			}
		case "error":
			if i == 0 && strings.HasPrefix(f.ID, runID) {
				refused.add(f.Code)
			}
		}
	})
	if err != nil {
		return result{}, false, fmt.Errorf("%w (file limit %d)", err, limit)
	}
	defer closeAll(socks)
	time.Sleep(settle)

	cpu0 := cpuSeconds(c.gatewayPID)
	pctx, stopProgress := context.WithCancel(ctx)
	go progress(pctx, stderr, func() string {
		return fmt.Sprintf("fanout: acked %d, delivered %d", acked.Load(), received.Load())
	})
	start := time.Now()
	sent := 0
	sender := socks[0]
	for pace := newPacer(start, float64(rate), duration); pace.next(ctx); {
		frame := fmt.Sprintf(`{"type":"send","id":"%sf%d","to":{"room":"lobby"},"text":%q}`, runID, sent, stamp(time.Now()))
		if err := sender.send(frame); err != nil {
			stopProgress()
			return result{}, false, fmt.Errorf("send: %w", err)
		}
		sent++
	}
	sendTime := time.Since(start)
	// Let the last acks and deliveries arrive (bounded). Only stored
	// messages are delivered: a refused send (its code is counted) was
	// never stored, so it is no loss.
	waitUntil(10*time.Second, func() bool {
		return received.Load() >= acked.Load()*int64(sockets) && acked.Load() >= int64(sent)-refused.total()
	})
	want := acked.Load() * int64(sockets)
	stopProgress()
	elapsed := time.Since(start)
	cpu := cpuSeconds(c.gatewayPID) - cpu0
	r := result{Scenario: fmt.Sprintf("fanout: %d sockets in one room, %d msg/s for %s", sockets, rate, sendTime.Round(time.Millisecond)), Figures: map[string]float64{
		"messages_sent":    float64(sent),
		"messages_acked":   float64(acked.Load()),
		"deliveries_want":  float64(want),
		"deliveries":       float64(received.Load()),
		"loss":             float64(want - received.Load()),
		"deliveries_per_s": float64(received.Load()) / elapsed.Seconds(),
	}}
	refused.addTo(r.Figures)
	for k, v := range lat.summary() {
		r.Figures["latency_"+k] = v
	}
	addCPU(&r, cpu, float64(received.Load()), "deliveries")
	r.gatewayPID = c.gatewayPID
	return r, c.json, nil
}

// waitUntil polls done until it holds, at most d: the tool waits for
// answers still in flight, bounded.
func waitUntil(d time.Duration, done func() bool) {
	for deadline := time.Now().Add(d); !done() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}

// pacer spaces a sender's sends at rate per second over duration from
// start. One that falls behind (a busy machine) catches up rather than
// skipping sends, as a ticker would: the load offered is the one asked for.
type pacer struct {
	start time.Time
	every time.Duration
	total int
	n     int
}

func newPacer(start time.Time, rate float64, duration time.Duration) *pacer {
	return &pacer{start: start, every: time.Duration(float64(time.Second) / rate), total: int(rate * duration.Seconds())}
}

// next waits until the next send is due; false when all were sent or ctx
// ended.
func (p *pacer) next(ctx context.Context) bool {
	if p.n >= p.total {
		return false
	}
	if d := time.Until(p.start.Add(time.Duration(p.n) * p.every)); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		}
	}
	p.n++
	return ctx.Err() == nil
}

func addCPU(r *result, cpu, work float64, what string) {
	if cpu < 0 {
		r.Notes = append(r.Notes, "gateway CPU not measured: give -gateway-pid")
		return
	}
	r.Figures["gateway_cpu_s"] = cpu
	if cpu > 0 {
		r.Figures[what+"_per_gateway_cpu_s"] = work / cpu
	}
}

func runDirect(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) (result, bool, error) {
	var c common
	var pairs int
	var rate float64
	var duration time.Duration
	fs := config.New("natter-bench direct", getenv, stderr)
	c.define(fs)
	fs.Int(&pairs, "pairs", "", 500, "pairs of users; in each, one sends to the other")
	fs.Float(&rate, "rate", "", 5, "messages per second per pair")
	fs.Duration(&duration, "duration", "", 10*time.Second, "how long to send")
	if err := fs.Parse(args[1:]); err != nil {
		return result{}, false, err
	}
	if err := bound("pairs", pairs, 1, maxSockets/2); err != nil {
		return result{}, false, err
	}
	if rate <= 0 || rate*float64(pairs) > maxRate {
		return result{}, false, fmt.Errorf("-rate %.1f x %d pairs out of range (at most %d/s in all)", rate, pairs, maxRate)
	}
	duration = min(duration, maxDuration)
	raiseFileLimit()
	sessions, err := c.login(ctx, 2*pairs, stderr)
	if err != nil {
		return result{}, false, err
	}
	sentAt := sync.Map{} // id -> time
	ackLat, recvLat := newLatencies(2*pairs), newLatencies(2*pairs)
	var acked, received, warmed, warmRefused atomic.Int64
	var refused refusals
	runID := newRunID()
	warmID := "w" + runID // not counted as this run's messages
	socks, err := openAll(ctx, c.newDialer(), sessions, 2*pairs, func(i int, f frame, at time.Time) {
		switch {
		case (f.Type == "ack" || f.Type == "error") && strings.HasPrefix(f.ID, warmID):
			if f.Type == "error" {
				warmRefused.Add(1)
			}
			warmed.Add(1)
		case f.Type == "ack" && i%2 == 0:
			if t, ok := sentAt.Load(f.ID); ok {
				acked.Add(1)
				ackLat.add(i, at.Sub(t.(time.Time)))
			}
		case f.Type == "message" && i%2 == 1 && strings.HasPrefix(f.ID, runID):
			if ts, ok := unstamp(f.Text); ok {
				received.Add(1)
				recvLat.add(i, at.Sub(ts))
			}
		case f.Type == "error":
			refused.add(f.Code)
		}
	})
	if err != nil {
		return result{}, false, err
	}
	defer closeAll(socks)
	time.Sleep(settle)
	// Warm-up: one message per pair, answered before anything is timed.
	// A gateway checks a recipient it does not see online with auth once
	// and remembers them; users who just connected may not be in its
	// presence list yet, and that one-time cost is not message flow.
	for p := range pairs {
		to := sessions[(2*p+1)%len(sessions)]
		if err := socks[2*p].send(fmt.Sprintf(`{"type":"send","id":"%s%d","to":{"user":%q},"text":"warm-up"}`, warmID, p, to.ID)); err != nil {
			return result{}, false, fmt.Errorf("warm-up send: %w", err)
		}
	}
	waitUntil(30*time.Second, func() bool { return warmed.Load() >= int64(pairs) })
	cpu0 := cpuSeconds(c.gatewayPID)
	pctx, stopProgress := context.WithCancel(ctx)
	go progress(pctx, stderr, func() string {
		return fmt.Sprintf("direct: acked %d, delivered %d", acked.Load(), received.Load())
	})
	start := time.Now()
	var sent atomic.Int64
	var wg sync.WaitGroup
	for p := range pairs {
		wg.Go(func() {
			from, to := socks[2*p], sessions[(2*p+1)%len(sessions)]
			// Pairs are spread over one period rather than all sending
			// at the same instant: people do not type in step.
			offset := time.Duration(float64(time.Second) / rate * float64(p) / float64(pairs))
			pace := newPacer(start.Add(offset), rate, duration)
			for n := 0; pace.next(ctx); n++ {
				id := fmt.Sprintf("%sd%d-%d", runID, p, n)
				now := time.Now()
				sentAt.Store(id, now)
				if from.send(fmt.Sprintf(`{"type":"send","id":%q,"to":{"user":%q},"text":%q}`, id, to.ID, stamp(now))) != nil {
					return
				}
				sent.Add(1)
			}
		})
	}
	wg.Wait()
	waitUntil(10*time.Second, func() bool {
		return received.Load() >= acked.Load() && acked.Load() >= sent.Load()-refused.total()
	})
	stopProgress()
	elapsed := time.Since(start)
	cpu := cpuSeconds(c.gatewayPID) - cpu0
	r := result{Scenario: fmt.Sprintf("direct: %d pairs, %.1f msg/s each, for %s", pairs, rate, duration), Figures: map[string]float64{
		"messages_sent":              float64(sent.Load()),
		"stored_acked":               float64(acked.Load()),
		"warmup_refused":             float64(warmRefused.Load()),
		"delivered":                  float64(received.Load()),
		"loss":                       float64(acked.Load() - received.Load()),
		"stored_and_delivered_per_s": float64(received.Load()) / elapsed.Seconds(),
	}}
	refused.addTo(r.Figures)
	for k, v := range ackLat.summary() {
		r.Figures["send_to_ack_"+k] = v
	}
	for k, v := range recvLat.summary() {
		r.Figures["send_to_receipt_"+k] = v
	}
	addCPU(&r, cpu, float64(received.Load()), "messages")
	r.gatewayPID = c.gatewayPID
	return r, c.json, nil
}

func runConnect(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) (result, bool, error) {
	var c common
	var sockets, inFlight int
	var resume bool
	fs := config.New("natter-bench connect", getenv, stderr)
	c.define(fs)
	fs.Int(&sockets, "sockets", "", 2000, "sockets to open")
	fs.Int(&c.users, "users", "", 1000, "distinct users the sockets belong to")
	fs.Int(&inFlight, "in-flight", "", defaultInFlight, "handshakes in flight at once")
	fs.Bool(&resume, "resume", "", false, "each socket resumes from its hello's seq, as a reconnecting browser does; the handshake ends at resumed")
	if err := fs.Parse(args[1:]); err != nil {
		return result{}, false, err
	}
	if err := errorsJoin(bound("sockets", sockets, 1, maxSockets), bound("users", c.users, 1, maxSockets), bound("in-flight", inFlight, 1, 1024)); err != nil {
		return result{}, false, err
	}
	limit := raiseFileLimit()
	sessions, err := c.login(ctx, min(c.users, sockets), stderr)
	if err != nil {
		return result{}, false, err
	}
	meter := newPresenceMeter(sockets)
	cpu0 := cpuSeconds(c.gatewayPID)
	start := time.Now()
	// A handshake is upgrade + token check + hello + the presence list
	// (+ resume and its replay).
	socks, err := openAllWith(ctx, c.newDialer(), sessions, sockets, inFlight, resume, meter.frame)
	elapsed := time.Since(start)
	if err != nil {
		return result{}, false, fmt.Errorf("%w (file limit %d)", err, limit)
	}
	defer closeAll(socks)
	what := "connect"
	if resume {
		what = "connect with resume"
	}
	r := result{Scenario: fmt.Sprintf("%s: %d sockets, %d at a time", what, sockets, inFlight), Figures: map[string]float64{
		"sockets":          float64(sockets),
		"seconds":          elapsed.Seconds(),
		"handshakes_per_s": float64(sockets) / elapsed.Seconds(),
	}}
	addCPU(&r, cpuSeconds(c.gatewayPID)-cpu0, float64(sockets), "handshakes")
	for k, v := range meter.figures(start.Add(elapsed)) {
		r.Figures[k] = v
	}
	r.gatewayPID = c.gatewayPID
	return r, c.json, nil
}

func runIdle(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) (result, bool, error) {
	var c common
	var sockets int
	var hold time.Duration
	fs := config.New("natter-bench idle", getenv, stderr)
	c.define(fs)
	fs.Int(&sockets, "sockets", "", 5000, "idle sockets to hold")
	fs.Int(&c.users, "users", "", 1000, "distinct users the sockets belong to")
	fs.Duration(&hold, "hold", "", 20*time.Second, "how long to hold them")
	var natsPID int
	fs.Int(&natsPID, "nats-pid", "", 0, "pid of the NATS server: its CPU time while the sockets are held is reported too")
	var pprof string
	fs.String(&pprof, "gateway-pprof", "", "", "the gateway's pprof base URL (its PPROF_ADDR, e.g. http://127.0.0.1:6060): adds stacks, live heap and goroutines per socket, read after RSS")
	if err := fs.Parse(args[1:]); err != nil {
		return result{}, false, err
	}
	if err := errorsJoin(bound("sockets", sockets, 1, maxSockets), bound("users", c.users, 1, maxSockets)); err != nil {
		return result{}, false, err
	}
	if c.gatewayPID <= 0 {
		return result{}, false, fmt.Errorf("idle needs -gateway-pid to read the gateway's memory")
	}
	hold = min(hold, maxDuration)
	limit := raiseFileLimit()
	sessions, err := c.login(ctx, min(c.users, sockets), stderr)
	if err != nil {
		return result{}, false, err
	}
	var memBefore runtimeMemory
	if pprof != "" {
		if memBefore, err = readRuntimeMemory(ctx, pprof); err != nil {
			return result{}, false, err
		}
	}
	before := rssKiB(c.gatewayPID)
	socks, err := openAll(ctx, c.newDialer(), sessions, sockets, nil)
	if err != nil {
		return result{}, false, fmt.Errorf("%w (file limit %d)", err, limit)
	}
	defer closeAll(socks)
	time.Sleep(settle)
	cpu0, natsCPU0, start := cpuSeconds(c.gatewayPID), cpuSeconds(natsPID), time.Now()
	select {
	case <-ctx.Done():
	case <-time.After(hold):
	}
	after := rssKiB(c.gatewayPID)
	cpu := cpuSeconds(c.gatewayPID) - cpu0
	held := time.Since(start).Seconds()
	r := result{Scenario: fmt.Sprintf("idle: %d sockets held %s", sockets, hold), Figures: map[string]float64{
		"sockets":                float64(sockets),
		"gateway_rss_before_kib": before,
		"gateway_rss_after_kib":  after,
		"kib_per_socket":         (after - before) / float64(sockets),
		// RSS after over sockets: an upper bound whatever ran before. The
		// difference above is the better figure, on a fresh gateway only:
		// a process keeps memory it has used, so a second run in the same
		// gateway reuses it and looks cheaper than it is.
		"kib_per_socket_upper": after / float64(sockets),
		"gateway_cpu_s_idle":   cpu,
		// Share of one core while held: the presence heartbeat is most of
		// an idle gateway's work (and of its NATS server's).
		"gateway_cpu_pct_idle": 100 * cpu / held,
	}}
	if natsPID > 0 {
		natsCPU := cpuSeconds(natsPID) - natsCPU0
		r.Figures["nats_cpu_s_idle"] = natsCPU
		r.Figures["nats_cpu_pct_idle"] = 100 * natsCPU / held
	}
	if pprof != "" { // after RSS: its collection would lower RSS
		memAfter, err := readRuntimeMemory(ctx, pprof)
		if err != nil {
			return result{}, false, err
		}
		addRuntimeMemory(&r, memBefore, memAfter, sockets)
	}
	if before > freshRSSKiB {
		r.Notes = append(r.Notes, fmt.Sprintf("the gateway held %.0f MiB before: kib_per_socket is only valid on a fresh gateway; kib_per_socket_upper is an upper bound", before/1024))
	}
	r.gatewayPID = c.gatewayPID
	return r, c.json, nil
}

// freshRSSKiB is about what a gateway holds before any socket.
const freshRSSKiB = 64 << 10

func errorsJoin(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// newRunID prefixes a run's message ids: the stream dedupes repeated ids
// for minutes, and a second run must not be taken for a retry.
func newRunID() string {
	return "r" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36) + "-"
}
