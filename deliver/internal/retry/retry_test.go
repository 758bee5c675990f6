package retry

import (
	"context"
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	base, ceiling := 100*time.Millisecond, time.Second
	for n := 0; n <= 40; n++ {
		limit := ceiling
		if n >= 1 && n < 5 {
			limit = base << (n - 1)
		}
		for range 200 {
			if d := Backoff(n, base, ceiling); d < time.Millisecond || d > limit+time.Millisecond {
				t.Fatalf("Backoff(%d, %s, %s) = %s, want within [1ms, %s]", n, base, ceiling, d, limit+time.Millisecond)
			}
		}
	}
}

func TestFits(t *testing.T) {
	if !Fits(context.Background(), time.Hour, time.Hour) {
		t.Error("Fits(no deadline) = false, want true")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !Fits(ctx, time.Second, time.Second) {
		t.Error("Fits(1s+1s within 1m) = false, want true")
	}
	if Fits(ctx, time.Minute, time.Second) {
		t.Error("Fits(1m+1s within 1m) = true, want false")
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); err != context.Canceled {
		t.Errorf("Sleep(cancelled, 1h) = %v, want context.Canceled", err)
	}
}
