package cputime

import (
	"crypto/sha256"
	"testing"
	"time"
)

// TestProcessGrows: work done between two readings shows as CPU time.
func TestProcessGrows(t *testing.T) {
	before := Process()
	sum := sha256.Sum256(nil)
	for Process() == before { // the clock ticks in steps (1–10 ms)
		sum = sha256.Sum256(sum[:])
	}
	if after := Process(); after < before {
		t.Errorf("Process() went back: %v, then %v", before, after)
	}
}

// TestAlternate: each variant runs b.N events after one warming block,
// the two alternate which goes first, and the ratio is variant 1 over 0.
func TestAlternate(t *testing.T) {
	var order []int
	res := testing.Benchmark(func(b *testing.B) {
		order = order[:0]
		Alternate(b, 10, [2]string{"plain", "sealed"}, func(i int) time.Duration {
			order = append(order, i)
			return time.Duration(10*(i+1)) * time.Millisecond // 1 ms an event, then 2
		})
	})
	if got := res.Extra["sealed/plain"]; got != 2 {
		t.Errorf("sealed/plain = %v, want 2 (all: %v)", got, res.Extra)
	}
	if got := res.Extra["plain-cpu-ns/event"]; got != float64(time.Millisecond) {
		t.Errorf("plain-cpu-ns/event = %v, want %d", got, time.Millisecond)
	}
	if len(order) < 6 || order[0] != 0 || order[1] != 1 || order[2] != 0 || order[4] != 1 {
		t.Errorf("blocks ran in order %v, want a warming 0 1, then 0 1, 1 0, …", order)
	}
	blocks := (len(order) - 2) / 2
	if events := blocks * 10; events < res.N {
		t.Errorf("%d events of each for b.N = %d, want at least b.N", events, res.N)
	}
}
