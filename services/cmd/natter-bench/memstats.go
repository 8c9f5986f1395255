package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// runtimeMemory is what a gateway's pprof endpoint says of its memory:
// goroutine stacks, live heap (after a collection it asks for) and the
// heap's spans in use, in bytes, and its goroutines.
type runtimeMemory struct {
	stack, heapLive, heapInuse, goroutines float64
}

// readRuntimeMemory asks the pprof server at base (the gateway's
// PPROF_ADDR). The heap profile forces a collection: read RSS first.
func readRuntimeMemory(ctx context.Context, base string) (runtimeMemory, error) {
	var m runtimeMemory
	heap, err := pprofLines(ctx, base+"/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return m, err
	}
	for _, line := range heap {
		switch {
		case strings.HasPrefix(line, "# Stack = "):
			m.stack = leadingNumber(strings.TrimPrefix(line, "# Stack = "))
		case strings.HasPrefix(line, "# HeapAlloc = "):
			m.heapLive = leadingNumber(strings.TrimPrefix(line, "# HeapAlloc = "))
		case strings.HasPrefix(line, "# HeapInuse = "):
			m.heapInuse = leadingNumber(strings.TrimPrefix(line, "# HeapInuse = "))
		}
	}
	g, err := pprofLines(ctx, base+"/debug/pprof/goroutine?debug=1")
	if err != nil {
		return m, err
	}
	if len(g) > 0 { // "goroutine profile: total N"
		m.goroutines = leadingNumber(g[0][strings.LastIndexByte(g[0], ' ')+1:])
	}
	return m, nil
}

func leadingNumber(s string) float64 {
	f, _ := strconv.ParseFloat(strings.Fields(s + " ")[0], 64)
	return f
}

// pprofLines fetches a text profile, at most its first 100,000 lines.
func pprofLines(ctx context.Context, url string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() && len(lines) < 100_000 {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}

// addRuntimeMemory puts the per-socket breakdown in r: what grew between
// before and after, over the sockets.
func addRuntimeMemory(r *result, before, after runtimeMemory, sockets int) {
	n := float64(sockets)
	r.Figures["stack_kib_per_socket"] = (after.stack - before.stack) / 1024 / n
	r.Figures["heap_live_kib_per_socket"] = (after.heapLive - before.heapLive) / 1024 / n
	r.Figures["heap_inuse_kib_per_socket"] = (after.heapInuse - before.heapInuse) / 1024 / n
	r.Figures["goroutines_per_socket"] = (after.goroutines - before.goroutines) / n
}
