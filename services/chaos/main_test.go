package chaos_test

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"

	"github.com/natter/natter/services/chaos"
)

// bin holds the built binaries the suite runs.
var bin string

// results are the scenarios' rows, printed as one table at the end.
var results struct {
	mu   sync.Mutex
	rows []chaos.Result
}

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	if os.Getenv("NATTER_BIN") == "" {
		dir, err := buildBinaries()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		os.Setenv("NATTER_BIN", dir)
	}
	var err error
	if bin, err = chaos.BinDir(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	printTable()
	results.mu.Lock()
	err = chaos.WriteChildResults(results.rows)
	results.mu.Unlock()
	if err != nil {
		fmt.Fprintln(os.Stderr, "results of a re-run:", err)
		return 1
	}
	return code
}

// buildBinaries builds what the suite runs into a temporary directory,
// for a `go test` without NATTER_BIN.
func buildBinaries() (string, error) {
	dir, err := os.MkdirTemp("", "natter-chaos-bin-")
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "build", "-o", dir+"/",
		"github.com/natter/natter/services/cmd/devstack",
		"github.com/natter/natter/auth",
		"github.com/natter/natter/presence",
		"github.com/natter/natter/gateway",
		"github.com/nats-io/nats-server/v2")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building binaries: %w", err)
	}
	return dir, nil
}

// printTable prints every scenario's row, and writes them to
// CHAOS_REPORT when it is set.
func printTable() {
	results.mu.Lock()
	defer results.mu.Unlock()
	if len(results.rows) == 0 {
		return
	}
	table := chaos.TableHeader
	for _, r := range results.rows {
		table += r.Row()
	}
	fmt.Print("\n" + table)
	if path := os.Getenv("CHAOS_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "CHAOS_REPORT:", err)
		}
	}
}

// record logs r and keeps its row for the table.
func record(t *testing.T, r chaos.Result) {
	t.Helper()
	t.Log("\n" + r.Summary())
	results.mu.Lock()
	results.rows = append(results.rows, r)
	results.mu.Unlock()
}

// full reports whether the suite runs at full size (CHAOS=full, `make
// chaos`) rather than the short version `make test` runs.
func full() bool { return os.Getenv("CHAOS") == "full" }

// size is short or, at full size, long.
func size[T any](short, long T) T {
	if full() {
		return long
	}
	return short
}

// seed is the scenario's fixed seed, or CHAOS_SEED to replay another; it
// is logged so a failure can be replayed.
func seed(t *testing.T, fixed uint64) uint64 {
	t.Helper()
	s := fixed
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: %v", v, err)
		}
		s = n
	}
	t.Logf("seed %d (replay: CHAOS_SEED=%d go test -run '^%s$' ./services/chaos)", s, s, t.Name())
	return s
}
