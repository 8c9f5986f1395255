package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/poll"
)

// password of every suite user; the accounts are the suite's own.
const password = "chaos-suite-pw-7"

// Eventually polls cond every poll.Interval until it holds (true) or
// timeout passes (false): for outcomes a scenario counts rather than
// fails on.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(poll.Interval)
	}
}

// Register registers and logs in n users through gateway's /api/, 8 at a
// time, before anything is measured.
func Register(t testing.TB, gateway, prefix string, n int) []User {
	t.Helper()
	users := make([]User, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			u, err := registerOne(gateway, fmt.Sprintf("%s%d", prefix, i))
			if err != nil {
				errs <- err
				return
			}
			users[i] = u
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	return users
}

func registerOne(gateway, account string) (User, error) {
	body := fmt.Sprintf(`{"account":%q,"password":%q,"name":%q}`, account, password, account)
	if code, b, err := PostJSON(gateway+"/api/register", body); err != nil || code != http.StatusCreated {
		return User{}, fmt.Errorf("register %s: %d %s %v", account, code, b, err)
	}
	return Login(gateway, account)
}

// Login logs account in through gateway's /api/login.
func Login(gateway, account string) (User, error) {
	code, b, err := PostJSON(gateway+"/api/login", fmt.Sprintf(`{"account":%q,"password":%q}`, account, password))
	if err != nil || code != http.StatusOK {
		return User{}, fmt.Errorf("login %s: %d %s %v", account, code, b, err)
	}
	var r struct {
		Token string
		User  struct{ ID string }
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return User{}, fmt.Errorf("login %s: %w", account, err)
	}
	return User{ID: r.User.ID, Account: account, Token: r.Token}, nil
}

// PostJSON posts body to url and returns the status and body.
func PostJSON(url, body string) (int, []byte, error) {
	code, _, b, err := PostJSONHeader(url, body)
	return code, b, err
}

// PostJSONHeader is PostJSON with the response's header.
func PostJSONHeader(url, body string) (int, http.Header, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// Fleet is a scenario's clients and their ledger.
type Fleet struct {
	Clients []*Client
	Ledger  *Ledger
	users   []User
	rng     *rand.Rand
}

// StartFleet opens perUser clients for each user, spread over the
// gateways, and waits until every one is live. They stop when the test
// ends.
func StartFleet(t testing.TB, users []User, perUser int, gws []string, seed uint64) *Fleet {
	t.Helper()
	return StartFleetWith(t, users, perUser, gws, seed, nil)
}

// StartFleetWith is StartFleet with client i dialing through dialer(i)
// when that is not nil.
func StartFleetWith(t testing.TB, users []User, perUser int, gws []string, seed uint64, dialer func(i int) *websocket.Dialer) *Fleet {
	t.Helper()
	f := &Fleet{Ledger: NewLedger(), users: users, rng: rand.New(rand.NewPCG(seed, 0))}
	std := NewDialer(0)
	prime(t, gws[0], users[0], std)
	for i := range len(users) * perUser {
		d := std
		if dialer != nil && dialer(i) != nil {
			d = dialer(i)
		}
		c := NewClient(i, users[i%len(users)], gws, seed, f.Ledger, d)
		f.Ledger.Add(c)
		f.Clients = append(f.Clients, c)
	}
	t.Cleanup(f.stop)
	for _, c := range f.Clients {
		c.Start()
	}
	f.WaitLive(t, 60*time.Second)
	return f
}

func (f *Fleet) stop() {
	var wg sync.WaitGroup
	for _, c := range f.Clients {
		wg.Go(c.Stop)
	}
	wg.Wait()
}

// WaitLive fails t unless every client is live within timeout.
func (f *Fleet) WaitLive(t testing.TB, timeout time.Duration) {
	t.Helper()
	var down int
	if !Eventually(timeout, func() bool {
		down = 0
		for _, c := range f.Clients {
			if !c.Live() {
				down++
			}
		}
		return down == 0
	}) {
		t.Fatalf("%d of %d clients not live after %s", down, len(f.Clients), timeout)
	}
}

// Load is a stream of sends from random clients: to the lobby, or with
// probability DM to a random other user.
type Load struct {
	Rate   float64 // sends per second, all clients together
	Max    int     // it stops after this many sends, whatever happens
	DM     float64 // share of direct messages, 0..1
	Filler int     // characters of text after the time stamp
	// Senders, if > 0, limits sending to the first Senders clients.
	Senders int
}

// Run sends until stop is closed or Max sends are made, and returns how
// many it made.
func (f *Fleet) Run(l Load, stop <-chan struct{}) int {
	tick := time.NewTicker(time.Duration(float64(time.Second) / l.Rate))
	defer tick.Stop()
	filler := strings.Repeat("x", l.Filler)
	senders := len(f.Clients)
	if l.Senders > 0 {
		senders = min(senders, l.Senders)
	}
	for n := 0; n < l.Max; n++ {
		select {
		case <-stop:
			return n
		case <-tick.C:
		}
		c := f.Clients[f.rng.IntN(senders)]
		to := chat.To{Room: chat.Lobby}
		if f.rng.Float64() < l.DM && len(f.users) > 1 {
			// Another user than the sender, at random.
			j := (c.Index%len(f.users) + 1 + f.rng.IntN(len(f.users)-1)) % len(f.users)
			to = chat.To{User: f.users[j].ID}
		}
		c.Send(to, filler)
	}
	return l.Max
}

// Settle waits until every send is acked and every acked message has
// reached every recipient, or timeout; it reports what is missing then.
func (f *Fleet) Settle(timeout time.Duration) (missing, unacked int) {
	Eventually(timeout, func() bool {
		missing, unacked = f.Ledger.Missing()
		return missing == 0 && unacked == 0
	})
	return missing, unacked
}

// NewDialer is a websocket dialer; with recvBuf > 0 its sockets' kernel
// receive buffer is that many bytes (a reader on a slow link), not the
// loopback default of megabytes.
func NewDialer(recvBuf int) *websocket.Dialer {
	nd := &net.Dialer{Timeout: dialTimeout}
	if recvBuf > 0 {
		nd.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, recvBuf)
			})
			return errors.Join(err, serr)
		}
	}
	return &websocket.Dialer{NetDialContext: nd.DialContext, HandshakeTimeout: dialTimeout, ReadBufferSize: 4096, WriteBufferSize: 1024}
}

// NewRand is the scenario's random source for seed: the same seed, the
// same choices.
func NewRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 1)) }

// prime stores one lobby message before the fleet connects, so its
// clients' first hello carries a seq above 0. The page resumes only from
// a seq above 0 (conn.js: lastSeq > 0), so on an empty stream a client
// that drops before its first message reconnects without resume and
// misses what was stored meanwhile: a defect of the page (reported with
// the suite), not what the scenarios measure.
func prime(t testing.TB, gw string, u User, d *websocket.Dialer) {
	t.Helper()
	h := http.Header{"Cookie": {chat.TokenCookie + "=" + u.Token}, "Origin": {gw}}
	conn, _, err := d.Dial("ws"+strings.TrimPrefix(gw, "http")+"/ws", h)
	if err != nil {
		t.Fatalf("prime: %v", err)
	}
	defer conn.Close()
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"send","id":"prime","to":{"room":"lobby"},"text":"primed"}`)); err != nil {
		t.Fatalf("prime: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("prime: no ack: %v", err)
		}
		if bytes.Contains(data, []byte(`"type":"ack"`)) {
			return
		}
	}
}
