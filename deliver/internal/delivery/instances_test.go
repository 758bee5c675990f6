package delivery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/deliver/internal/dedupe"
	"github.com/startdeliver/segment-destination/deliver/internal/identity"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/shared/emulatortest"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/journey"
	"github.com/startdeliver/segment-destination/shared/waitfor"
)

// instances returns n processors that share the fixture's account, the
// Startdeliver stand-in and one Firestore, each with stores of its own, as
// n deliver instances would.
func instances(t *testing.T, f *fixture, n int, budget time.Duration) ([]*Processor, *journey.Reader) {
	t.Helper()
	env := emulatortest.Require(t)
	fs := emulatortest.Firestore(t, env)
	col, ids := emulatortest.Name(t, "deliveries"), emulatortest.Name(t, "identities")
	ps := make([]*Processor, n)
	for i := range ps {
		ps[i] = New(Options{
			Accounts: f.acc, Completions: dedupe.New(fs, dedupe.Options{Collection: col}),
			Claims: identity.New(fs, identity.Options{Collection: ids}), DeadLetters: f.dead, Budget: budget,
			Client: startdeliver.New(startdeliver.Options{DefaultBaseURL: f.sd.URL(),
				Retry: startdeliver.Retry{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, MinAttempt: time.Millisecond}}),
		})
	}
	return ps, journey.NewReader(fs, col)
}

// TestCopiesOnTwoInstancesTakeEffectOnce: two copies of one event (a
// Segment retry, a redelivery; without ordering keys nothing keeps them
// apart) processed at the same moment by two instances take effect once:
// one delivers, the other waits for it and is a duplicate. Each event is a
// new person's, so the copies also contend for creating the user.
func TestCopiesOnTwoInstancesTakeEffectOnce(t *testing.T) {
	f := newFixture(t, simple)
	f.sd.SetLatency(100 * time.Millisecond) // the copies overlap
	ps, _ := instances(t, f, 2, time.Minute)
	const events = 5
	for i := range events {
		m := message(t, fmt.Sprintf(`{"type":"track","userId":"u-%d","event":"e","messageId":"copy-%d"}`, i, i))
		var wg sync.WaitGroup
		results := make([]Result, len(ps))
		for n, p := range ps {
			wg.Go(func() { results[n] = p.Process(context.Background(), m) })
		}
		wg.Wait()
		outcomes := map[string]int{}
		for _, r := range results {
			outcomes[r.Outcome]++
		}
		if outcomes[OutcomeDelivered] != 1 || outcomes[OutcomeDuplicate] != 1 {
			t.Errorf("copy-%d on two instances: outcomes %v, want one delivered and one duplicate", i, outcomes)
		}
	}
	if got := len(f.sd.Usage(key)); got != events {
		t.Errorf("usage records = %d for %d events sent twice, want %d", got, events, events)
	}
	if got := len(f.sd.Users(key)); got != events {
		t.Errorf("users = %d for %d people, want %d", got, events, events)
	}
}

// TestNackReleasesClaim: an event nacked without a record of its own (its
// budget ran out before Startdeliver answered) gives its claim back, so its
// redelivery to another instance runs at once instead of waiting for the
// claim to go stale.
func TestNackReleasesClaim(t *testing.T) {
	f := newFixture(t, simple)
	f.sd.SetLatency(time.Second)
	slow, reader := instances(t, f, 1, 200*time.Millisecond)
	m := message(t, `{"type":"track","userId":"u1","event":"e","messageId":"slow"}`)
	res := slow[0].Process(context.Background(), m)
	if res.Decision != Nack {
		t.Fatalf("event past its budget: %+v, want a nack", res)
	}
	rec, err := reader.Get(context.Background(), envelope.AccountID(key), "slow")
	if !errors.Is(err, journey.ErrNotFound) {
		t.Errorf("record after a nack of class %s = %+v, %v; want none (the claim released)", res.Class, rec, err)
	}
}

// TestCopyElsewhereWaitsWithoutSlot: while another instance runs a copy of
// an event (its claim is fresh), the event waits in process with its
// account's slot given back, so the account's other events run meanwhile;
// once the claim is free it claims again and runs. It is never nacked for
// the wait.
func TestCopyElsewhereWaitsWithoutSlot(t *testing.T) {
	f := newFixture(t, simple)
	f.p.sched = newScheduler(1) // one slot for the account
	f.done.mu.Lock()
	f.done.heldElsewhere = map[string]bool{"elsewhere": true}
	f.done.mu.Unlock()
	waiting := make(chan Result, 1)
	go func() {
		waiting <- f.p.Process(context.Background(), message(t, `{"type":"track","userId":"u1","event":"e","messageId":"elsewhere"}`))
	}()
	waitfor.True(t, "the event to be told another instance holds it", func() bool {
		f.done.mu.Lock()
		defer f.done.mu.Unlock()
		return f.done.reads > 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if res := f.p.Process(ctx, message(t, `{"type":"track","userId":"u2","event":"e","messageId":"meanwhile"}`)); res.Outcome != OutcomeDelivered {
		t.Fatalf("the account's other event while one waits for another instance: %+v, want delivered (the slot given back)", res)
	}
	select {
	case res := <-waiting:
		t.Fatalf("the held event finished while another instance held it: %+v", res)
	default:
	}
	f.done.mu.Lock()
	f.done.heldElsewhere = nil
	f.done.mu.Unlock()
	if res := <-waiting; res.Outcome != OutcomeDelivered {
		t.Errorf("the held event once free: %+v, want delivered", res)
	}
}
