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

	"github.com/natter/natter/services/config"
)

// The rooms scenario: many rooms of different sizes, their members split
// over the gateways, senders in every room; it checks that every member
// gets every message of their rooms and nobody one of a room they are not
// in, and measures delivery latency, deliveries/s and the gateways' CPU
// per delivery.

// roomsFlags are the rooms scenario's settings.
type roomsFlags struct {
	common
	rooms, minMembers, maxMembers, senders, setupConc int
	rate                                              float64
	duration                                          time.Duration
	gateway2PID                                       int
	leave                                             bool
}

func (f *roomsFlags) parse(args []string, getenv func(string) string, stderr io.Writer) error {
	fs := config.New("natter-bench rooms", getenv, stderr)
	f.define(fs)
	fs.Int(&f.users, "users", "", 1000, "users, one socket each (user i on gateway i mod n)")
	fs.Int(&f.rooms, "rooms", "", 100, "rooms")
	fs.Int(&f.minMembers, "min-members", "", 10, "members of the smallest room (sizes spread evenly up to -max-members)")
	fs.Int(&f.maxMembers, "max-members", "", 100, "members of the biggest room")
	fs.Int(&f.senders, "senders", "", 3, "members of each room who send, in turn")
	fs.Float(&f.rate, "rate", "", 200, "messages per second over all rooms, spread evenly")
	fs.Duration(&f.duration, "duration", "", 10*time.Second, "how long to send")
	fs.Int(&f.gateway2PID, "gateway2-pid", "", 0, "pid of the second gateway: its CPU time counts too")
	fs.Int(&f.setupConc, "setup-concurrency", "", 32, "setup requests in flight at once")
	fs.Bool(&f.leave, "leave", "", true, "members leave the run's rooms at the end, so runs do not pile rooms up")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	f.duration = min(f.duration, maxDuration)
	if f.rate <= 0 || f.rate > maxRate {
		return fmt.Errorf("-rate %.1f out of range (0, %d]", f.rate, maxRate)
	}
	return errorsJoin(bound("users", f.users, 2, maxSockets), bound("rooms", f.rooms, 1, 1000),
		bound("min-members", f.minMembers, 1, f.users), bound("max-members", f.maxMembers, f.minMembers, f.users),
		bound("senders", f.senders, 1, 100), bound("setup-concurrency", f.setupConc, 1, 256))
}

// roomPlan is who is in which room: room k has members[k] (user
// indexes); member[u*rooms+k] says whether user u is in room k.
type roomPlan struct {
	rooms, users int
	members      [][]int
	member       []bool
}

// roomStride spaces rooms' first members over the users; odd and prime,
// so rooms' creators differ (unless users is a multiple of it).
const roomStride = 37

// planRooms sizes room k evenly from lo to hi members, consecutive users
// from k*roomStride on: with user u on gateway u mod n, every room's
// members are split over the gateways.
func planRooms(rooms, users, lo, hi int) *roomPlan {
	p := &roomPlan{rooms: rooms, users: users, members: make([][]int, rooms), member: make([]bool, rooms*users)}
	for k := range rooms {
		size := lo
		if rooms > 1 {
			size = lo + (hi-lo)*k/(rooms-1)
		}
		for m := range size {
			u := (k*roomStride + m) % users
			p.members[k] = append(p.members[k], u)
			p.member[u*rooms+k] = true
		}
	}
	return p
}

// roomMsgID is the id of message n of room k in a run: the receiver can
// tell the room a delivery belongs to from the id alone.
func roomMsgID(runID string, k, n int) string { return fmt.Sprintf("%sk%d-%d", runID, k, n) }

// parseRoomMsgID is roomMsgID backwards; ok is false for another run's.
func parseRoomMsgID(runID, id string) (k int, ok bool) {
	rest, found := strings.CutPrefix(id, runID+"k")
	if !found {
		return 0, false
	}
	ks, _, found := strings.Cut(rest, "-")
	k, err := strconv.Atoi(ks)
	return k, found && err == nil
}

// roomTally counts one run's sends and deliveries by room and member.
type roomTally struct {
	plan          *roomPlan
	runID         string
	acked         []atomic.Int64 // by room
	got           []atomic.Int64 // by user*rooms+room
	delivered     atomic.Int64
	wrongRoom     atomic.Int64
	lat           *latencies
	refused       refusals
	ackedAll      atomic.Int64
	deliveriesDue atomic.Int64
}

func newRoomTally(plan *roomPlan, runID string) *roomTally {
	return &roomTally{plan: plan, runID: runID, acked: make([]atomic.Int64, plan.rooms),
		got: make([]atomic.Int64, plan.rooms*plan.users), lat: newLatencies(plan.users)}
}

// message counts a delivery to user u.
func (t *roomTally) message(u int, id, text string, at time.Time) {
	k, ok := parseRoomMsgID(t.runID, id)
	if !ok || k < 0 || k >= t.plan.rooms {
		return
	}
	if !t.plan.member[u*t.plan.rooms+k] {
		t.wrongRoom.Add(1)
		return
	}
	t.got[u*t.plan.rooms+k].Add(1)
	t.delivered.Add(1)
	if ts, ok := unstamp(text); ok {
		t.lat.add(u, at.Sub(ts))
	}
}

// frame counts acks and refusals of the run's sends.
func (t *roomTally) frame(_ int, f rframe) {
	k, ok := parseRoomMsgID(t.runID, f.ID)
	if !ok || k < 0 || k >= t.plan.rooms {
		return
	}
	switch f.Type {
	case "ack":
		t.acked[k].Add(1)
		t.ackedAll.Add(1)
		t.deliveriesDue.Add(int64(len(t.plan.members[k])))
	case "error":
		t.refused.add(f.Code)
	}
}

// check is what members missed (messages of their rooms not received)
// and got twice.
func (t *roomTally) check() (missing, duplicates int64) {
	for k, ms := range t.plan.members {
		want := t.acked[k].Load()
		for _, u := range ms {
			switch got := t.got[u*t.plan.rooms+k].Load(); {
			case got < want:
				missing += want - got
			case got > want:
				duplicates += got - want
			}
		}
	}
	return missing, duplicates
}

func runRooms(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) (result, bool, error) {
	var f roomsFlags
	f.prefix = "broom"
	if err := f.parse(args, getenv, stderr); err != nil {
		return result{}, false, err
	}
	limit := raiseFileLimit()
	sessions, err := f.login(ctx, f.users, stderr)
	if err != nil {
		return result{}, false, err
	}
	plan := planRooms(f.rooms, f.users, f.minMembers, f.maxMembers)
	runID := newRunID()
	tally := newRoomTally(plan, runID)
	peers, err := openPeers(ctx, f.newDialer(), sessions, defaultInFlight, runID+"s", peerHooks{message: tally.message, frame: tally.frame})
	if err != nil {
		return result{}, false, fmt.Errorf("%w (file limit %d)", err, limit)
	}
	defer closePeers(peers)
	start := time.Now()
	ids, err := setupRooms(plan, peers, runID, f.setupConc)
	if err != nil {
		return result{}, false, fmt.Errorf("setup: %w", err)
	}
	fmt.Fprintf(stderr, "rooms: %d rooms set up in %s\n", len(ids), time.Since(start).Round(time.Millisecond))
	if f.leave {
		defer leaveRooms(plan, peers, ids, f.setupConc)
	}
	time.Sleep(settle) // every socket live (past the resume hold)
	r := sendInRooms(ctx, &f, plan, peers, ids, tally, stderr)
	return r, f.json, nil
}

// setupRooms has each room's first member create it and the others join,
// and says the rooms' ids.
func setupRooms(plan *roomPlan, peers []*peer, runID string, conc int) ([]string, error) {
	ids := make([]string, plan.rooms)
	err := eachBounded(plan.rooms, conc, func(k int) error {
		id, err := peers[plan.members[k][0]].createRoom(fmt.Sprintf("bench %s%d", runID, k))
		ids[k] = id
		return err
	})
	if err != nil {
		return nil, err
	}
	// Each user's joins in turn (one socket answers in order), users in
	// parallel.
	joins := make([][]string, plan.users)
	for k, ms := range plan.members {
		for _, u := range ms[1:] {
			joins[u] = append(joins[u], ids[k])
		}
	}
	return ids, eachBounded(plan.users, conc, func(u int) error {
		for _, id := range joins[u] {
			if err := peers[u].join(id); err != nil {
				return err
			}
		}
		return nil
	})
}

// leaveRooms has every member leave the run's rooms (bounded; their
// answers are not waited for).
func leaveRooms(plan *roomPlan, peers []*peer, ids []string, conc int) {
	_ = eachBounded(plan.rooms, conc, func(k int) error {
		for _, u := range plan.members[k] {
			_ = peers[u].leave(ids[k])
		}
		return nil
	})
	time.Sleep(2 * time.Second) // let the leaves land before the sockets close
}

// sendInRooms sends rate messages a second over all rooms for duration,
// each room's in turn from its first senders, waits (bounded) for the
// deliveries due, and reports.
func sendInRooms(ctx context.Context, f *roomsFlags, plan *roomPlan, peers []*peer, ids []string, t *roomTally, stderr io.Writer) result {
	cpu0, cpu20 := cpuSeconds(f.gatewayPID), cpuSeconds(f.gateway2PID)
	pctx, stopProgress := context.WithCancel(ctx)
	go progress(pctx, stderr, func() string {
		return fmt.Sprintf("rooms: acked %d, delivered %d", t.ackedAll.Load(), t.delivered.Load())
	})
	start := time.Now()
	var sent atomic.Int64
	var wg sync.WaitGroup
	perRoom := f.rate / float64(plan.rooms)
	for k := range plan.rooms {
		wg.Go(func() {
			// Rooms spread over one period, not all sending at once.
			offset := time.Duration(float64(time.Second) / perRoom * float64(k) / float64(plan.rooms))
			senders := plan.members[k][:min(f.senders, len(plan.members[k]))]
			for n, pace := 0, newPacer(start.Add(offset), perRoom, f.duration); pace.next(ctx); n++ {
				frame := fmt.Sprintf(`{"type":"send","id":%q,"to":{"room":%q},"text":%q}`, roomMsgID(t.runID, k, n), ids[k], stamp(time.Now()))
				if peers[senders[n%len(senders)]].send(frame) != nil {
					return
				}
				sent.Add(1)
			}
		})
	}
	wg.Wait()
	waitUntil(10*time.Second, func() bool {
		return t.ackedAll.Load() >= sent.Load()-t.refused.total() && t.delivered.Load() >= t.deliveriesDue.Load()
	})
	stopProgress()
	elapsed := time.Since(start)
	return roomsResult(f, plan, t, sent.Load(), elapsed, cpuSeconds(f.gatewayPID)-cpu0, cpuSeconds(f.gateway2PID)-cpu20)
}

func roomsResult(f *roomsFlags, plan *roomPlan, t *roomTally, sent int64, elapsed time.Duration, cpu1, cpu2 float64) result {
	missing, dups := t.check()
	members := 0
	for _, ms := range plan.members {
		members += len(ms)
	}
	r := result{Scenario: fmt.Sprintf("rooms: %d rooms of %d-%d members (%d memberships, %d users) over %d gateways, %.0f msg/s for %s",
		plan.rooms, f.minMembers, f.maxMembers, members, plan.users, len(f.gatewayURLs()), f.rate, f.duration), Figures: map[string]float64{
		"messages_sent":    float64(sent),
		"messages_acked":   float64(t.ackedAll.Load()),
		"deliveries_want":  float64(t.deliveriesDue.Load()),
		"deliveries":       float64(t.delivered.Load()),
		"missing":          float64(missing),
		"duplicates":       float64(dups),
		"wrong_room":       float64(t.wrongRoom.Load()),
		"deliveries_per_s": float64(t.delivered.Load()) / elapsed.Seconds(),
	}}
	if missing+dups+t.wrongRoom.Load() > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("CHECK FAILED: %d missing, %d duplicates, %d of a room the receiver is not in", missing, dups, t.wrongRoom.Load()))
	}
	t.refused.addTo(r.Figures)
	putLatencies(r.Figures, "latency_", t.lat)
	cpu := cpu1 // gateway_cpu_s, below, is both gateways'
	if f.gateway2PID > 0 {
		cpu += cpu2
		r.Figures["gateway1_cpu_s"], r.Figures["gateway2_cpu_s"] = cpu1, cpu2
	}
	addCPU(&r, cpu, float64(t.delivered.Load()), "deliveries")
	if cpu > 0 && f.gatewayPID > 0 && t.delivered.Load() > 0 {
		r.Figures["gateway_cpu_us_per_delivery"] = 1e6 * cpu / float64(t.delivered.Load())
	}
	if len(f.gatewayURLs()) > 1 && f.gateway2PID <= 0 {
		r.Notes = append(r.Notes, "CPU is the first gateway's only: give -gateway2-pid")
	}
	r.gatewayPID = f.gatewayPID
	return r
}
