package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/natter/natter/services/config"
)

// Hard upper bounds: a run is bounded in size and time whatever the flags.
const (
	maxSockets  = 50000
	maxDuration = 5 * time.Minute
	maxRate     = 100000
	// password of every bench user; the accounts are the tool's own.
	benchPassword = "natter-bench-pw-7"
)

// common are the flags every scenario has.
type common struct {
	gateways   string // comma-separated base URLs
	prefix     string // account prefix
	users      int
	sources    int // source addresses 127.0.0.1 .. 127.0.0.<sources>
	gatewayPID int
	json       bool
	tokenCache string
}

func (c *common) define(fs *config.Set) {
	fs.String(&c.gateways, "gateway", "NATTER_GATEWAY", "http://127.0.0.1:8080", "gateway base URL(s), comma-separated; sockets are spread over them")
	fs.String(&c.prefix, "prefix", "", "bench", "account prefix of the bench users")
	fs.Int(&c.sources, "sources", "", 8, "loopback source addresses to spread client sockets over (each gives about 28,000 ports)")
	fs.Int(&c.gatewayPID, "gateway-pid", "", 0, "pid of the (first) gateway: its CPU time and memory are read from /proc")
	fs.Bool(&c.json, "json", "", false, "print the result as JSON")
	fs.String(&c.tokenCache, "token-cache", "", "", "file to keep tokens in between runs (they are valid 24 h)")
}

func (c *common) gatewayURLs() []string {
	var out []string
	for _, g := range strings.Split(c.gateways, ",") {
		if g = strings.TrimRight(strings.TrimSpace(g), "/"); g != "" {
			out = append(out, g)
		}
	}
	return out
}

// session is a logged-in bench user.
type session struct {
	ID, Account, Name, Token string
}

// login registers (if new) and logs in n users before anything is timed.
func (c *common) login(ctx context.Context, n int, stderr io.Writer) ([]session, error) {
	cache := map[string]session{}
	if c.tokenCache != "" {
		if b, err := os.ReadFile(c.tokenCache); err == nil {
			_ = json.Unmarshal(b, &cache)
		}
	}
	api := c.gatewayURLs()[0]
	out := make([]session, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range n {
		account := fmt.Sprintf("%s-%d", c.prefix, i)
		if s, ok := cache[account]; ok {
			out[i] = s
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			s, err := loginOne(ctx, api, account)
			if err != nil {
				errs <- err
				return
			}
			out[i] = s
			mu.Lock()
			cache[account] = s
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	if c.tokenCache != "" {
		b, _ := json.Marshal(cache)
		_ = os.WriteFile(c.tokenCache, b, 0o600)
	}
	return out, nil
}

func loginOne(ctx context.Context, api, account string) (session, error) {
	body := fmt.Sprintf(`{"account":%q,"password":%q,"name":%q}`, account, benchPassword, account)
	if code, b, err := post(ctx, api+"/api/register", body); err != nil || (code != 201 && code != 409) {
		return session{}, fmt.Errorf("register %s: %d %s %v", account, code, b, err)
	}
	code, b, err := post(ctx, api+"/api/login", fmt.Sprintf(`{"account":%q,"password":%q}`, account, benchPassword))
	if err != nil || code != 200 {
		return session{}, fmt.Errorf("login %s: %d %s %v (a rate limit? the bench stack raises it)", account, code, b, err)
	}
	var r struct {
		Token string
		User  struct{ ID, Name string }
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return session{}, err
	}
	return session{ID: r.User.ID, Account: account, Name: r.User.Name, Token: r.Token}, nil
}

func post(ctx context.Context, url, body string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, nil
}

// dialer spreads sockets over source addresses and gateways.
type dialer struct {
	gateways []string
	dialers  []*websocket.Dialer
}

func (c *common) newDialer() *dialer {
	d := &dialer{gateways: c.gatewayURLs()}
	for i := range max(1, c.sources) {
		local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i))}
		nd := &net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}
		d.dialers = append(d.dialers, &websocket.Dialer{
			NetDialContext:   nd.DialContext,
			HandshakeTimeout: 10 * time.Second,
			ReadBufferSize:   4096,
			WriteBufferSize:  1024,
		})
	}
	return d
}

// dial opens socket number i as s.
func (d *dialer) dial(ctx context.Context, s session, i int) (*websocket.Conn, error) {
	gw := d.gateways[i%len(d.gateways)]
	h := http.Header{"Authorization": {"Bearer " + s.Token}}
	// 503 is a gateway not ready for sockets yet (say, auth's keys still
	// loading): tried again for a while, as the page does.
	for deadline := time.Now().Add(unavailableRetry); ; {
		conn, resp, err := d.dialers[i%len(d.dialers)].DialContext(ctx, "ws"+strings.TrimPrefix(gw, "http")+"/ws", h)
		switch {
		case err == nil:
			return conn, nil
		case resp == nil:
			return nil, classify(err)
		case resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) || ctx.Err() != nil:
			return nil, fmt.Errorf("dial %s: %v (HTTP %d)", gw, err, resp.StatusCode)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// unavailableRetry bounds how long a socket is tried again on 503.
const unavailableRetry = 10 * time.Second

// classify names the machine limit behind a dial error, if one is.
func classify(err error) error {
	switch {
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return fmt.Errorf("machine limit: out of file descriptors: %w", err)
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("machine limit: out of local ports (add -sources): %w", err)
	}
	return err
}

// raiseFileLimit lifts the soft file limit to the hard one.
func raiseFileLimit() uint64 {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return 0
	}
	l.Cur = l.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	return l.Cur
}

// frame is what the tool reads of server frames.
type frame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Seq  uint64 `json:"seq"`
	Text string `json:"text"`
	Code string `json:"code"`
	Size int    `json:"-"` // a presence object's bytes
}

// readFrames calls f for each object of each frame until the socket ends,
// decoding it into a frame (see readLines).
func readFrames(conn *websocket.Conn, f func(frame, time.Time)) error {
	return readLines(conn, func(line []byte, now time.Time) {
		if fr, ok := fastMessage(line); ok {
			f(fr, now)
			return
		}
		var fr frame
		if json.Unmarshal(line, &fr) == nil {
			f(fr, now)
		}
	}, func(size int, now time.Time) {
		f(frame{Type: "presence", Size: size}, now)
	})
}

// readLines calls f with each object of each frame, undecoded, until the
// socket ends. A frame is read in pieces through one buffer per socket,
// reused, and split at '\n': the tool shares the machine with the
// servers, so its own work costs them CPU. A presence object (in a
// connect storm, most of what it reads; the online list alone is tens of
// KB) is passed over, never kept whole, and reported at its end with its
// size to presence, when not nil. The line is only valid during the call.
func readLines(conn *websocket.Conn, f func([]byte, time.Time), presence func(size int, at time.Time)) error {
	chunk := make([]byte, 4096)
	var line []byte
	for {
		_, r, err := conn.NextReader()
		if err != nil {
			return err
		}
		now := time.Now()
		skipped := -1 // bytes of the presence object being passed over
		end := func() {
			if skipped >= 0 && presence != nil {
				presence(skipped, now)
			} else if skipped < 0 && len(line) > 0 {
				f(line, now)
			}
			skipped, line = -1, line[:0]
		}
		line = line[:0]
		for {
			n, err := r.Read(chunk)
			for data := chunk[:n]; len(data) > 0; {
				nl := bytes.IndexByte(data, '\n')
				part := data
				if nl >= 0 {
					part = data[:nl]
				}
				if skipped >= 0 {
					skipped += len(part)
				} else {
					line = append(line, part...)
					if len(line) >= len(presencePrefix) && string(line[:len(presencePrefix)]) == presencePrefix {
						skipped, line = len(line), line[:0]
					}
				}
				if nl < 0 {
					break
				}
				end()
				data = data[nl+1:]
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		end()
	}
}

// presencePrefix starts every presence object the gateway sends.
const presencePrefix = `{"type":"presence"`

// fastMessage reads a timed message (its id and text) without a JSON
// decoder: the tool shares the machine with the servers, and decoding
// every delivery would take CPU the gateway then lacks. Anything else
// takes the slow path.
func fastMessage(line []byte) (frame, bool) {
	// The gateway puts "type" and "seq" last in message frames.
	if !bytes.Contains(line, []byte(`,"type":"message","seq":`)) {
		return frame{}, false
	}
	id, ok := fastString(line, `"id":"`)
	if !ok {
		return frame{}, false
	}
	text, ok := fastString(line, `"text":"`)
	if !ok || !strings.HasPrefix(text, "t=") {
		return frame{}, false
	}
	return frame{Type: "message", ID: id, Text: text}, true
}

// fastString is the first string value after key, when it has no escapes
// (the ids and stamps the tool sends never do).
func fastString(line []byte, key string) (string, bool) {
	i := bytes.Index(line, []byte(key))
	if i < 0 {
		return "", false
	}
	rest := line[i+len(key):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 || bytes.IndexByte(rest[:end], '\\') >= 0 {
		return "", false
	}
	return string(rest[:end]), true
}

// stamp is the text of a timed message: its send time.
func stamp(t time.Time) string { return "t=" + strconv.FormatInt(t.UnixNano(), 10) }

func unstamp(text string) (time.Time, bool) {
	n, err := strconv.ParseInt(strings.TrimPrefix(text, "t="), 10, 64)
	if err != nil || !strings.HasPrefix(text, "t=") {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

// latencies collects durations and reports percentiles. Each socket's
// reader records into its own shard: a thousand readers sharing one lock
// would add contention, and delay, to what is being measured.
type latencies struct {
	shards []latencyShard
}

type latencyShard struct {
	mu sync.Mutex
	d  []time.Duration
}

func newLatencies(shards int) *latencies {
	return &latencies{shards: make([]latencyShard, max(1, shards))}
}

// add records d from the reader of socket i.
func (l *latencies) add(i int, d time.Duration) {
	s := &l.shards[i%len(l.shards)]
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
}

func (l *latencies) summary() map[string]float64 {
	var s []time.Duration
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		s = append(s, sh.d...)
		sh.mu.Unlock()
	}
	if len(s) == 0 {
		return map[string]float64{}
	}
	slices.Sort(s)
	p := func(q float64) float64 {
		return float64(s[min(len(s)-1, int(q*float64(len(s))))].Microseconds()) / 1000
	}
	return map[string]float64{"p50_ms": p(.50), "p90_ms": p(.90), "p99_ms": p(.99), "max_ms": float64(s[len(s)-1].Microseconds()) / 1000}
}

// cpuSeconds is the CPU time pid has used (user + system), or -1.
func cpuSeconds(pid int) float64 {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	if len(fields) < 13 {
		return -1
	}
	ut, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return (ut + st) / 100 // clock ticks of 10 ms (USER_HZ)
}

// rssKiB is pid's resident memory, or -1.
func rssKiB(pid int) float64 {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return n
		}
	}
	return -1
}

// result is one run's figures, printed as a table or JSON.
type result struct {
	Scenario string             `json:"scenario"`
	Figures  map[string]float64 `json:"figures"`
	Notes    []string           `json:"notes,omitempty"`

	gatewayPID int // the run's -gateway-pid, for quiesce
}

func (r result) print(w io.Writer, asJSON bool) {
	if asJSON {
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Fprintln(w, string(b))
		return
	}
	fmt.Fprintf(w, "%s\n", r.Scenario)
	keys := make([]string, 0, len(r.Figures))
	for k := range r.Figures {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %-28s %14.2f\n", k, r.Figures[k])
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

// progress prints a progress line to w every second until ctx ends.
func progress(ctx context.Context, w io.Writer, line func() string) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(w)
			return
		case <-t.C:
			fmt.Fprintf(w, "\r%s   ", line())
		}
	}
}

func bound(name string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("-%s %d out of range %d..%d", name, v, lo, hi)
	}
	return nil
}

// refusals counts the sends the gateway refused, by error code: a refused
// send was never stored, so its deliveries are not "lost".
type refusals struct {
	mu    sync.Mutex
	codes map[string]int64
}

func (r *refusals) add(code string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.codes == nil {
		r.codes = map[string]int64{}
	}
	r.codes[code]++
}

// addTo puts "refused" and "refused_<code>" for each code into figures.
func (r *refusals) addTo(figures map[string]float64) {
	figures["refused"] = float64(r.total())
	r.mu.Lock()
	defer r.mu.Unlock()
	for code, k := range r.codes {
		figures["refused_"+code] = float64(k)
	}
}

// total is how many sends were refused.
func (r *refusals) total() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, k := range r.codes {
		n += k
	}
	return n
}
