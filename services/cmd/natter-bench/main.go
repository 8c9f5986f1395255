// Command natter-bench measures natter the way its operators meet it: it
// registers and logs in its users through the real HTTP API (before any
// measurement, so login cost is not in the figures), opens real websockets
// to one or more gateways, and speaks the browser protocol.
//
//	natter-bench fanout  -sockets 1000 -rate 100 -duration 10s   one room, one sender
//	natter-bench direct  -pairs 500 -rate 5 -duration 10s        direct messages between pairs
//	natter-bench connect -sockets 2000                           handshakes per second
//	natter-bench idle    -sockets 10000 -hold 20s -gateway-pid N gateway memory per idle socket
//	natter-bench conversations -users 100 -sockets 2000        handshakes and lists with 200 conversations
//	natter-bench rooms   -gateway A,B -rooms 100 -rate 200      room fan-out over two gateways
//
// Every size and duration has a hard upper bound. Client sockets are spread
// over 127.0.0.x source addresses, and the tool raises its own file limit;
// when a machine limit stops it, it says which instead of reporting a
// wrong figure. -json prints the result for machines.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "natter-bench:", err)
		os.Exit(1)
	}
}

const usage = `usage: natter-bench fanout|direct|connect|idle|conversations|rooms [-runs N] [flags]  (natter-bench <scenario> -h lists the flags)`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		return fmt.Errorf("%s", usage)
	}
	scenarios := map[string]func(context.Context, []string, func(string) string, io.Writer) (result, bool, error){
		"fanout":  runFanout,
		"direct":  runDirect,
		"connect": runConnect,
		"idle":    runIdle,

		"conversations": runConversations,
		"rooms":         runRooms,
	}
	f, ok := scenarios[args[1]]
	if !ok {
		return fmt.Errorf("unknown scenario %q; %s", args[1], usage)
	}
	// -runs N (before the scenario's flags) repeats it and reports medians.
	runs, rest := 1, args[1:]
	if len(rest) > 2 && rest[1] == "-runs" {
		n, err := strconv.Atoi(rest[2])
		if err != nil || n < 1 || n > 10 {
			return fmt.Errorf("-runs %q: want 1 to 10", rest[2])
		}
		runs, rest = n, append([]string{rest[0]}, rest[3:]...)
	}
	// The tool's own CPU profile, to see what the load costs its side.
	if path := getenv("NATTER_BENCH_CPUPROFILE"); path != "" {
		out, err := os.Create(path)
		if err != nil {
			return err
		}
		defer out.Close()
		if err := pprof.StartCPUProfile(out); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var results []result
	asJSON := false
	for i := range runs {
		r, j, err := f(ctx, rest, getenv, stderr)
		if err != nil {
			return err
		}
		asJSON = j
		if runs > 1 {
			fmt.Fprintf(stderr, "run %d of %d done\n", i+1, runs)
		}
		results = append(results, r)
		// Also after the last run, when the gateway is known: a storm's
		// teardown (thousands of sockets closing, users going offline)
		// must not land in the next scenario's figures.
		if i < runs-1 || r.gatewayPID > 0 {
			quiesce(ctx, r.gatewayPID)
		}
	}
	median(results).print(stdout, asJSON)
	return nil
}

// quiesce waits, between runs, until the gateway has finished the last
// run's teardown (closed sockets, presence going offline), so a run
// measures its own work: until it uses under a tenth of a core for a
// quarter second, at most 20 s; 2 s when its pid is unknown.
func quiesce(ctx context.Context, pid int) {
	const step = 250 * time.Millisecond
	if pid <= 0 || cpuSeconds(pid) < 0 {
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
		}
		return
	}
	prev := cpuSeconds(pid)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; {
		time.Sleep(step)
		now := cpuSeconds(pid)
		if now-prev < 0.1*step.Seconds() {
			return
		}
		prev = now
	}
}

// median is the per-figure median of several runs of one scenario.
func median(rs []result) result {
	if len(rs) == 1 {
		return rs[0]
	}
	out := result{Scenario: fmt.Sprintf("%s (median of %d runs)", rs[0].Scenario, len(rs)), Figures: map[string]float64{}}
	for i, r := range rs {
		for _, n := range r.Notes {
			out.Notes = append(out.Notes, fmt.Sprintf("run %d: %s", i+1, n))
		}
	}
	for k := range rs[0].Figures {
		var v []float64
		for _, r := range rs {
			v = append(v, r.Figures[k])
		}
		slices.Sort(v)
		out.Figures[k] = v[len(v)/2]
	}
	return out
}
