package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// A peer is a bench socket that sets things up through the protocol
// (rooms, joins, messages) and waits for the answers: a frame with an id
// goes to whoever asked with that id, a joined frame to whoever joins its
// room. The room and conversation scenarios build their state this way,
// as browsers would, before anything is timed.

// setupWait bounds the wait for one answer of the setup.
const setupWait = 15 * time.Second

// setupRetries bounds the attempts of one setup request refused with
// rate_limited or unavailable (the stack's limits, a busy gateway).
const setupRetries = 8

// rframe is what the room and conversation scenarios read of a frame.
type rframe struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Seq     uint64          `json:"seq"`
	Room    json.RawMessage `json:"room"`
	Rooms   json.RawMessage `json:"rooms"`
	Items   []struct {
		Last *struct {
			Seq uint64 `json:"seq"`
		} `json:"last"`
	} `json:"items"`
	More bool `json:"more"`

	at time.Time // when its frame began to arrive
}

// roomID is the room a frame names: an object's id (room, joined) or a
// string (member).
func (f rframe) roomID() string {
	var r struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(f.Room, &r) == nil {
		return r.ID
	}
	var s string
	_ = json.Unmarshal(f.Room, &s)
	return s
}

// peerHooks see what a peer's socket receives: timed messages (id, text)
// undecoded, and every other frame decoded.
type peerHooks struct {
	message func(i int, id, text string, at time.Time)
	frame   func(i int, f rframe)
}

type peer struct {
	i      int
	sess   session
	conn   *websocket.Conn
	prefix string // of the ids of its requests: unique to the run
	next   atomic.Int64
	wmu    sync.Mutex

	hello  chan struct{} // closed at hello
	listed chan struct{} // closed at the first conversations frame
	rooms  []string      // hello's, the lobby left out

	mu    sync.Mutex
	waits map[string]chan rframe
}

// openPeers opens one socket per session (socket i on gateway i mod n),
// inFlight handshakes at a time, and waits for every hello.
func openPeers(ctx context.Context, d *dialer, sessions []session, inFlight int, prefix string, hooks peerHooks) ([]*peer, error) {
	peers := make([]*peer, len(sessions))
	errs := make(chan error, len(sessions))
	sem := make(chan struct{}, max(1, inFlight))
	var wg sync.WaitGroup
	for i, s := range sessions {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			p, err := dialPeer(ctx, d, s, i, prefix, hooks)
			if err != nil {
				errs <- err
				return
			}
			peers[i] = p
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		closePeers(peers)
		return nil, err
	}
	return peers, nil
}

func dialPeer(ctx context.Context, d *dialer, s session, i int, prefix string, hooks peerHooks) (*peer, error) {
	conn, err := d.dial(ctx, s, i)
	if err != nil {
		return nil, err
	}
	p := &peer{i: i, sess: s, conn: conn, prefix: fmt.Sprintf("%sp%d-", prefix, i),
		hello: make(chan struct{}), listed: make(chan struct{}), waits: map[string]chan rframe{}}
	go func() {
		var listed sync.Once
		_ = readLines(conn, func(line []byte, at time.Time) {
			if f, ok := p.handle(line, at, hooks); ok && f.Type == "conversations" && f.ID == "" {
				listed.Do(func() { close(p.listed) })
			}
		}, nil)
	}()
	if err := waitSignal(p.hello, "hello", i); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return p, nil
}

func closePeers(peers []*peer) {
	for _, p := range peers {
		if p != nil {
			_ = p.conn.Close()
		}
	}
}

// handle passes one frame object on: a timed message to the hooks, any
// other frame to the hooks and to whoever waits for it.
func (p *peer) handle(line []byte, at time.Time, hooks peerHooks) (rframe, bool) {
	if fr, ok := fastMessage(line); ok {
		if hooks.message != nil {
			hooks.message(p.i, fr.ID, fr.Text, at)
		}
		return rframe{}, false
	}
	var f rframe
	if json.Unmarshal(line, &f) != nil {
		return rframe{}, false
	}
	f.at = at
	if hooks.frame != nil {
		hooks.frame(p.i, f)
	}
	switch {
	case f.Type == "hello":
		var rooms []string
		_ = json.Unmarshal(f.Rooms, &rooms)
		for _, r := range rooms {
			if r != "lobby" {
				p.rooms = append(p.rooms, r)
			}
		}
		close(p.hello)
	case f.ID != "":
		p.deliver("id:"+f.ID, f)
	case f.Type == "joined":
		p.deliver("joined:"+f.roomID(), f)
	}
	return f, true
}

func (p *peer) send(frame string) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	return p.conn.WriteMessage(websocket.TextMessage, []byte(frame))
}

// newID is a request id unique to this peer and run.
func (p *peer) newID() string { return p.prefix + strconv.FormatInt(p.next.Add(1), 10) }

func (p *peer) deliver(key string, f rframe) {
	p.mu.Lock()
	ch, ok := p.waits[key]
	p.mu.Unlock()
	if ok {
		select {
		case ch <- f:
		default:
		}
	}
}

// askOnce sends frame and waits for the first frame under any of keys.
func (p *peer) askOnce(frame string, keys []string) (rframe, error) {
	ch := make(chan rframe, len(keys))
	p.mu.Lock()
	for _, k := range keys {
		p.waits[k] = ch
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		for _, k := range keys {
			delete(p.waits, k)
		}
		p.mu.Unlock()
	}()
	if err := p.send(frame); err != nil {
		return rframe{}, err
	}
	t := time.NewTimer(setupWait)
	defer t.Stop()
	select {
	case f := <-ch:
		return f, nil
	case <-t.C:
		return rframe{}, fmt.Errorf("%s: no answer to %s within %s", p.sess.Account, frame, setupWait)
	}
}

// ask is askOnce, tried again (bounded, backing off) while the gateway
// answers rate_limited or unavailable; any other error frame is an error.
func (p *peer) ask(frame string, keys ...string) (rframe, error) {
	for attempt := 1; ; attempt++ {
		f, err := p.askOnce(frame, keys)
		if err != nil || f.Type != "error" {
			return f, err
		}
		if (f.Code != "rate_limited" && f.Code != "unavailable") || attempt == setupRetries {
			return f, fmt.Errorf("%s: %s refused: %s: %s", p.sess.Account, frame, f.Code, f.Message)
		}
		time.Sleep(time.Duration(attempt) * 250 * time.Millisecond)
	}
}

// post sends text to (a "to" object) and waits for its ack.
func (p *peer) post(to, text string) error {
	id := p.newID()
	_, err := p.ask(fmt.Sprintf(`{"type":"send","id":%q,"to":%s,"text":%q}`, id, to, text), "id:"+id)
	return err
}

// createRoom makes a public room and says its id.
func (p *peer) createRoom(name string) (string, error) {
	id := p.newID()
	f, err := p.ask(fmt.Sprintf(`{"type":"room_create","id":%q,"name":%q,"visibility":"public"}`, id, name), "id:"+id)
	if err != nil {
		return "", err
	}
	if f.Type != "room" || f.roomID() == "" {
		return "", fmt.Errorf("room_create answered with %s", f.Type)
	}
	return f.roomID(), nil
}

// join enters room: answered by joined (or, when already in, by an
// answer with the request's id).
func (p *peer) join(room string) error {
	id := p.newID()
	_, err := p.ask(fmt.Sprintf(`{"type":"join","id":%q,"room":%q}`, id, room), "id:"+id, "joined:"+room)
	return err
}

// leave leaves room; its answer (left) is not waited for.
func (p *peer) leave(room string) error {
	return p.send(fmt.Sprintf(`{"type":"leave","id":%q,"room":%q}`, p.newID(), room))
}

// countConversations pages through the user's conversations (at most
// maxPages pages) and says how many there are.
func (p *peer) countConversations() (int, error) {
	const maxPages = 20
	n := 0
	var before uint64
	for range maxPages {
		id := p.newID()
		f, err := p.ask(fmt.Sprintf(`{"type":"conversations","id":%q,"before":%d}`, id, before), "id:"+id)
		if err != nil {
			return n, err
		}
		n += len(f.Items)
		if !f.More || len(f.Items) == 0 || f.Items[len(f.Items)-1].Last == nil {
			return n, nil
		}
		before = f.Items[len(f.Items)-1].Last.Seq
	}
	return n, fmt.Errorf("more than %d pages of conversations", maxPages)
}

// eachBounded runs f(i) for i in [0, n), at most conc at once, and
// returns the first error.
func eachBounded(n, conc int, f func(i int) error) error {
	errs := make(chan error, n)
	sem := make(chan struct{}, max(1, conc))
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(i); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}
