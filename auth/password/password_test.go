package password

import (
	"context"
	"errors"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cheap keeps unit tests fast; the format and logic are the same.
var cheap = Params{MemoryKiB: 64, Iterations: 1, Parallelism: 1}

func TestHashFormat(t *testing.T) {
	h, err := Hash("correct horse battery staple", DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
	if !re.MatchString(h) {
		t.Fatalf("hash %q is not a PHC argon2id string with OWASP parameters", h)
	}
	if err := Check("correct horse battery staple", h); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if err := Check("correct horse battery stapl", h); !errors.Is(err, ErrMismatch) {
		t.Fatalf("wrong password: %v", err)
	}
	h2, _ := Hash("correct horse battery staple", DefaultParams)
	if h2 == h {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
}

func TestParseRejects(t *testing.T) {
	for _, phc := range []string{
		"", "plain", "$argon2i$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA",
		"$argon2id$v=16$m=1,t=1,p=1$c2FsdA$aGFzaA",
		"$argon2id$v=19$m=x,t=1,p=1$c2FsdA$aGFzaA",
		"$argon2id$v=19$m=1,t=1,p=1$!!$aGFzaA",
		"$argon2id$v=19$m=1,t=1,p=1$c2FsdA$",
	} {
		if _, _, _, err := Parse(phc); err == nil {
			t.Errorf("Parse(%q) accepted", phc)
		}
		if err := Check("x", phc); err == nil || errors.Is(err, ErrMismatch) {
			t.Errorf("Check against %q = %v, want a format error", phc, err)
		}
	}
}

func TestPoolBoundsConcurrency(t *testing.T) {
	p, err := NewPool(2, cheap)
	if err != nil {
		t.Fatal(err)
	}
	var running, peak atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if err := p.acquire(context.Background()); err != nil {
				t.Error(err)
				return
			}
			n := running.Add(1)
			for {
				old := peak.Load()
				if n <= old || peak.CompareAndSwap(old, n) {
					break
				}
			}
			_, _ = Hash("x", cheap)
			running.Add(-1)
			p.release()
		})
	}
	wg.Wait()
	if peak.Load() > 2 {
		t.Fatalf("%d hashes ran at once in a pool of 2", peak.Load())
	}
}

func TestPoolBusy(t *testing.T) {
	p, err := NewPool(1, cheap)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.release()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := p.Hash(ctx, "x"); !errors.Is(err, ErrBusy) {
		t.Fatalf("Hash with the pool full = %v, want ErrBusy", err)
	}
}

func TestUnknownAccountMismatches(t *testing.T) {
	p, err := NewPool(1, cheap)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Check(context.Background(), "natter-dummy-password-never-matches", ""); !errors.Is(err, ErrMismatch) {
		t.Fatalf("check of an unknown account = %v, want ErrMismatch", err)
	}
}
