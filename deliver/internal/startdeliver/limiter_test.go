package startdeliver

import "testing"

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
