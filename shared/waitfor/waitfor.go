// Package waitfor is the tests' one way to wait on a condition instead of
// sleeping: poll it, at first every millisecond and then less often (up to
// every 50 ms, so that a costly condition does not load the machine), and
// fail the test with what was awaited when a deadline passes.
package waitfor

import (
	"testing"
	"time"
)

// Default is how long True waits.
const Default = 10 * time.Second

// True waits up to Default for cond; see Within.
func True(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Default, what, cond)
}

// Within polls cond until it holds, or fails t once timeout has passed.
func Within(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}
