package delivery

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
)

// TestRetryBudget503Forever: with Startdeliver answering 503 to
// everything, one delivery makes at most the client's MaxAttempts requests
// (one retrying layer, not client × plan) and ends within its budget plus
// the outcome's bound, then nacks for Pub/Sub to redeliver later. The
// bound checked is loose on purpose (the budget itself, not a latency): a
// delivery that ignored its budget would take many seconds more.
func TestRetryBudget503Forever(t *testing.T) {
	f := newFixture(t, simple)
	const budget = time.Second
	f.p = New(Options{Accounts: f.acc, Completions: f.done, Claims: fakeClaims{}, DeadLetters: f.dead, Budget: budget,
		Client: startdeliver.New(startdeliver.Options{DefaultBaseURL: f.sd.URL(),
			Retry: startdeliver.Retry{MaxAttempts: 10, BaseDelay: 50 * time.Millisecond, MaxDelay: 200 * time.Millisecond, MinAttempt: 100 * time.Millisecond}})})
	f.sd.FailFraction(1, startdelivertest.Fault{Status: 503})
	for i := range 3 {
		start := time.Now()
		res := f.p.Process(context.Background(), message(t, fmt.Sprintf(`{"type":"track","userId":"u1","event":"e","messageId":"b-%d"}`, i)))
		took := time.Since(start)
		calls := f.sd.TotalCalls()
		f.sd.ResetCounters()
		// The last answer's class, or the budget's when it ran out during
		// an attempt.
		if res.Decision != Nack || (res.Class != "startdeliver-503" && res.Class != "budget-exceeded") {
			t.Errorf("delivery %d = %v %q (%v), want Nack startdeliver-503 or budget-exceeded", i, res.Decision, res.Class, res.Err)
		}
		if calls < 2 || calls > 10 {
			t.Errorf("delivery %d made %d requests, want retries within the budget and at most MaxAttempts (10)", i, calls)
		}
		if took > budget+f.p.opts.FinishTimeout {
			t.Errorf("delivery %d took %s, want within its %s budget and %s outcome bound", i, took, budget, f.p.opts.FinishTimeout)
		}
		t.Logf("delivery %d: %d requests in %s", i, calls, took.Round(time.Millisecond))
	}
}

// TestRetryAfterBeyondBudgetNacksAtOnce: a Retry-After longer than what is
// left of the budget nacks without sleeping, and the account's next event
// does not call Startdeliver while it is paused.
func TestRetryAfterBeyondBudgetNacksAtOnce(t *testing.T) {
	f := newFixture(t, simple)
	f.sd.FailNext(1, startdelivertest.Fault{Status: 429, RetryAfter: "3600"})
	start := time.Now()
	res := f.p.Process(context.Background(), message(t, `{"type":"track","userId":"u1","event":"e","messageId":"ra-1"}`))
	if res.Decision != Nack || time.Since(start) > f.p.opts.Budget {
		t.Fatalf("Process after Retry-After: 3600 = %v %q (%v) in %s, want Nack at once", res.Decision, res.Class, res.Err, time.Since(start))
	}
	if n := f.sd.TotalCalls(); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
	res = f.p.Process(context.Background(), message(t, `{"type":"track","userId":"u1","event":"e","messageId":"ra-2"}`))
	if res.Decision != Nack || f.sd.TotalCalls() != 1 {
		t.Errorf("next event of the paused account = %v (%v) after %d requests, want Nack without a request", res.Decision, res.Err, f.sd.TotalCalls())
	}
}

// Test429StormSlowsRequests: while Startdeliver answers 429 with
// Retry-After: 1 to everything, 20 concurrent events of one account send
// far fewer requests than their retries would without the account's pause
// and rate cut (20 events × 4 attempts), and the requests of each second
// of the storm are logged; once it ends, every event is delivered.
func Test429StormSlowsRequests(t *testing.T) {
	f := newFixture(t, simple)
	f.p = New(Options{Accounts: f.acc, Completions: f.done, Claims: fakeClaims{}, DeadLetters: f.dead, Budget: 3 * time.Second, PerAccount: 20,
		Client: startdeliver.New(startdeliver.Options{DefaultBaseURL: f.sd.URL(),
			Retry: startdeliver.Retry{BaseDelay: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond, MinAttempt: 100 * time.Millisecond}})})
	const events = 20
	f.sd.FailFraction(1, startdelivertest.Fault{Status: 429, RetryAfter: "1"})
	var perSecond []int
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		prev := 0
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				n := f.sd.TotalCalls()
				perSecond = append(perSecond, n-prev)
				prev = n
			}
		}
	})
	var wg sync.WaitGroup
	results := make([]Result, events)
	for i := range events {
		wg.Go(func() {
			results[i] = f.p.Process(context.Background(), message(t, fmt.Sprintf(`{"type":"track","userId":"u%d","event":"e","messageId":"st-%d"}`, i, i)))
		})
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	storm := f.sd.TotalCalls()
	for i, r := range results {
		if r.Decision != Nack {
			t.Errorf("event %d during the storm = %v %s, want Nack", i, r.Decision, r.Outcome)
		}
	}
	if storm >= events*4/2 {
		t.Errorf("%d requests during the storm, want well under the %d unthrottled retries would send", storm, events*4)
	}
	t.Logf("429 storm: %d requests from %d events (unthrottled: %d); per second: %v", storm, events, events*4, perSecond)

	// After the storm the account's rate climbs back with each success
	// (startdeliver.RateLimit): an event that runs out of budget meanwhile
	// is nacked and redelivered (here one event at a time, a moment apart).
	f.sd.ClearFaults()
	// The storm's reservations and halvings leave the account at its floor
	// rate for a while: allow a minute of redeliveries.
	redeliveries := 0
	deadline := time.Now().Add(time.Minute)
	for i := range events {
		for {
			res := f.p.Process(context.Background(), message(t, fmt.Sprintf(`{"type":"track","userId":"u%d","event":"e","messageId":"st-%d"}`, i, i)))
			if res.Outcome == OutcomeDelivered {
				break
			}
			if res.Decision != Nack || time.Now().After(deadline) {
				t.Fatalf("event %d after the storm, redelivery %d = %v %s (%v), want delivered within a minute", i, redeliveries, res.Decision, res.Outcome, res.Err)
			}
			redeliveries++
			time.Sleep(500 * time.Millisecond)
		}
	}
	t.Logf("after the storm: every event delivered, %d redeliveries while the rate recovered", redeliveries)
	if n := len(f.sd.Usage(key)); n != events {
		t.Errorf("usage records = %d, want %d", n, events)
	}
}
