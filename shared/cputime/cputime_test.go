package cputime

import (
	"crypto/sha256"
	"testing"
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
