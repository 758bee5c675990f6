package startdeliver

import (
	"math"
	"testing"
)

// current returns the account's rate in requests per second.
func (a *accountLimiter) current() float64 {
	if a == nil {
		return math.Inf(1)
	}
	return float64(a.lim.Limit())
}

// TestRateLimiterRecovers: a 429 halves the account's rate, and successes
// bring it back to the maximum in RecoverSteps.
func TestRateLimiterRecovers(t *testing.T) {
	a := newLimiters(RateLimit{Max: 1000, Burst: 1000, RecoverSteps: 10}).get("k")
	a.throttled(0)
	if r := a.current(); r >= 1000 {
		t.Fatalf("rate after a 429 = %v, want below 1000", r)
	}
	for range 20 {
		a.succeeded()
	}
	if r := a.current(); r != 1000 {
		t.Errorf("rate after 20 successes = %v, want back at 1000", r)
	}
}
