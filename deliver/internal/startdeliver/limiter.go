package startdeliver

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimit configures the per-account request rate limiter. It is
// additive-increase / multiplicative-decrease: a 429 halves the account's
// rate (at most once per DecreaseInterval, so one burst of 429s counts once)
// and pauses it for the Retry-After the answer asked for; every success adds
// Max/RecoverSteps back, up to Max.
type RateLimit struct {
	// Disabled turns the limiter off: calls go out as fast as they come.
	Disabled bool
	// Max is the highest rate per account, in requests per second (default 20).
	Max float64
	// Min is the floor the rate never halves below (default 0.5).
	Min float64
	// Burst is the largest burst at full rate (default 10).
	Burst int
	// RecoverSteps is how many successes bring the rate from Min back to Max (default 50).
	RecoverSteps int
	// DecreaseInterval is the shortest time between two halvings (default 200ms).
	DecreaseInterval time.Duration
}

func (r RateLimit) withDefaults() RateLimit {
	if r.Max <= 0 {
		r.Max = 20
	}
	if r.Min <= 0 {
		r.Min = 0.5
	}
	if r.Min > r.Max {
		r.Min = r.Max
	}
	if r.Burst <= 0 {
		r.Burst = 10
	}
	if r.RecoverSteps <= 0 {
		r.RecoverSteps = 50
	}
	if r.DecreaseInterval <= 0 {
		r.DecreaseInterval = 200 * time.Millisecond
	}
	return r
}

// limiters holds one limiter per account, keyed by the key's hash.
type limiters struct {
	cfg RateLimit
	mu  sync.Mutex
	m   map[string]*accountLimiter
}

type accountLimiter struct {
	cfg          RateLimit
	lim          *rate.Limiter
	mu           sync.Mutex
	pausedUntil  time.Time
	lastDecrease time.Time
}

func newLimiters(cfg RateLimit) *limiters {
	return &limiters{cfg: cfg.withDefaults(), m: map[string]*accountLimiter{}}
}

func (l *limiters) get(accountID string) *accountLimiter {
	if l.cfg.Disabled {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	al, ok := l.m[accountID]
	if !ok {
		al = &accountLimiter{cfg: l.cfg, lim: rate.NewLimiter(rate.Limit(l.cfg.Max), l.cfg.Burst)}
		l.m[accountID] = al
	}
	return al
}

// wait blocks until the account may send one request. When the account is
// paused for longer than maxPause it returns the remaining pause instead of
// waiting (ok false), so the caller can hand the event back to Pub/Sub.
func (a *accountLimiter) wait(ctx context.Context, maxPause time.Duration) (pause time.Duration, ok bool, err error) {
	if a == nil {
		return 0, true, nil
	}
	a.mu.Lock()
	remaining := time.Until(a.pausedUntil)
	a.mu.Unlock()
	if remaining > maxPause {
		return remaining, false, nil
	}
	if remaining > 0 {
		t := time.NewTimer(remaining)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, false, ctx.Err()
		case <-t.C:
		}
	}
	if err := a.lim.Wait(ctx); err != nil {
		return 0, false, err
	}
	return 0, true, nil
}

// throttled records a 429: halve the rate and pause for retryAfter.
func (a *accountLimiter) throttled(retryAfter time.Duration) {
	if a == nil {
		return
	}
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if until := now.Add(retryAfter); until.After(a.pausedUntil) {
		a.pausedUntil = until
	}
	if now.Sub(a.lastDecrease) < a.cfg.DecreaseInterval {
		return
	}
	a.lastDecrease = now
	a.setRate(float64(a.lim.Limit()) / 2)
}

// succeeded records a successful call: recover a step of rate.
func (a *accountLimiter) succeeded() {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := float64(a.lim.Limit())
	if cur >= a.cfg.Max {
		return
	}
	a.setRate(cur + a.cfg.Max/float64(a.cfg.RecoverSteps))
}

// setRate must be called with a.mu held.
func (a *accountLimiter) setRate(r float64) {
	r = math.Max(a.cfg.Min, math.Min(a.cfg.Max, r))
	burst := int(math.Ceil(float64(a.cfg.Burst) * r / a.cfg.Max))
	if burst < 1 {
		burst = 1
	}
	a.lim.SetLimit(rate.Limit(r))
	a.lim.SetBurst(burst)
}
