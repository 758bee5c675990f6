// Package retry is deliver's one back-off: the pause between two tries of
// anything that failed in a way that may pass (a Startdeliver call, a
// Firestore write, a claim another creator holds), and the test of whether
// such a pause still fits in the time a delivery has left. The policy that
// uses it is stated once, in package delivery's documentation.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is the pause before retry number n (1 is the first retry): a
// random duration up to base·2^(n-1), capped at ceiling ("full jitter", so
// that many deliveries failing at once do not retry in step), and never
// less than a millisecond.
func Backoff(n int, base, ceiling time.Duration) time.Duration {
	d := ceiling
	if n >= 1 && n < 32 {
		if b := base << (n - 1); b > 0 && b < ceiling {
			d = b
		}
	}
	return time.Millisecond + rand.N(d)
}

// Fits reports whether pausing for d still leaves at least need before
// ctx's deadline. Without a deadline everything fits.
func Fits(ctx context.Context, d, need time.Duration) bool {
	deadline, ok := ctx.Deadline()
	return !ok || time.Until(deadline) >= d+need
}

// Sleep pauses for d, or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
