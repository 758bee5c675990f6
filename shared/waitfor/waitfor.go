// Package waitfor is the tests' one way to wait on a condition instead of
// sleeping: poll it and fail the test with what was awaited when a
// deadline passes. True polls every millisecond, for cheap conditions on
// in-process state that may hold only briefly; Within backs off from a
// millisecond to 50 ms, for end-to-end conditions that cost a request.
package waitfor

import (
	"testing"
	"time"
)

// Default is how long True waits.
const Default = 10 * time.Second

// True polls cond every millisecond until it holds, or fails t after
// Default.
func True(t testing.TB, what string, cond func() bool) {
	t.Helper()
	poll(t, Default, time.Millisecond, what, cond)
}

// Within polls cond until it holds, or fails t once timeout has passed.
func Within(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	poll(t, timeout, 50*time.Millisecond, what, cond)
}

// poll checks cond with pauses growing from a millisecond to most.
func poll(t testing.TB, timeout, most time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, most)
	}
}
