package delivery

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/deliver/internal/dedupe"
	"github.com/startdeliver/segment-destination/deliver/internal/identity"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/emulatortest"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/journey"
	"github.com/startdeliver/segment-destination/shared/waitfor"
)

// instances returns n processors that share the fixture's account, one
// Firestore and the Startdeliver API at baseURL, each with stores of its
// own, as n deliver instances would. tap, when set, wraps each one's
// completions store.
func instances(t *testing.T, f *fixture, n int, budget time.Duration, baseURL string, tap func(completions) completions) ([]*Processor, *journey.Reader) {
	t.Helper()
	env := emulatortest.Require(t)
	fs := emulatortest.Firestore(t, env)
	col, ids := emulatortest.Name(t, "deliveries"), emulatortest.Name(t, "identities")
	ps := make([]*Processor, n)
	for i := range ps {
		var c completions = dedupe.New(fs, dedupe.Options{Collection: col})
		if tap != nil {
			c = tap(c)
		}
		ps[i] = New(Options{
			Accounts: f.acc, Completions: c,
			Claims: identity.New(fs, identity.Options{Collection: ids}), DeadLetters: f.dead, Budget: budget,
			Client: startdeliver.New(startdeliver.Options{DefaultBaseURL: baseURL,
				Retry: startdeliver.Retry{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, MinAttempt: time.Millisecond}}),
		})
	}
	return ps, journey.NewReader(fs, col)
}

// gate holds every request until release, and closes arrived when the
// first one comes.
type gate struct {
	next     http.Handler
	arrived  chan struct{}
	open     chan struct{}
	once     sync.Once // of arrived
	openOnce sync.Once
}

func newGate(t *testing.T, next http.Handler) *gate {
	g := &gate{next: next, arrived: make(chan struct{}), open: make(chan struct{})}
	t.Cleanup(g.release) // a failed test lets held requests finish
	return g
}

func (g *gate) release() { g.openOnce.Do(func() { close(g.open) }) }

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.once.Do(func() { close(g.arrived) })
	<-g.open
	g.next.ServeHTTP(w, r)
}

// heldTap tells when a claim was answered dedupe.ErrHeld: the copy found
// another instance's copy running.
type heldTap struct {
	completions
	mu   sync.Mutex
	held chan struct{} // closed at the first ErrHeld since arm
}

func (h *heldTap) arm() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held = make(chan struct{})
	return h.held
}

func (h *heldTap) Claim(ctx context.Context, r *dedupe.Record) (*dedupe.Claim, error) {
	c, err := h.completions.Claim(ctx, r)
	if errors.Is(err, dedupe.ErrHeld) {
		h.mu.Lock()
		select {
		case <-h.held:
		default:
			close(h.held)
		}
		h.mu.Unlock()
	}
	return c, err
}

// TestCopiesOnTwoInstancesTakeEffectOnce: two copies of one event (a
// Segment retry, a redelivery; without ordering keys nothing keeps them
// apart) on two instances at the same moment take effect once. Instance A
// claims the event and is held at its first Startdeliver call; B's copy
// then finds A's claim and waits; only then does A go on. A delivers, B is
// a duplicate. Each event is a new person's, so a second run would also
// create a second user.
func TestCopiesOnTwoInstancesTakeEffectOnce(t *testing.T) {
	f := newFixture(t, simple)
	var cur atomic.Pointer[gate]
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { cur.Load().ServeHTTP(w, r) }))
	t.Cleanup(api.Close) // after the gates' releases (cleanups run last first)
	var tap *heldTap
	ps, _ := instances(t, f, 2, time.Minute, api.URL+startdelivertest.APIPrefix, func(c completions) completions {
		if tap != nil {
			return c // A's store, untapped
		}
		tap = &heldTap{completions: c}
		return tap
	})
	b, a := ps[0], ps[1] // the first store made is tapped: b's
	const events = 3
	for i := range events {
		g := newGate(t, f.sd)
		cur.Store(g)
		held := tap.arm()
		m := message(t, fmt.Sprintf(`{"type":"track","userId":"u-%d","event":"e","messageId":"copy-%d"}`, i, i))
		resA, resB := make(chan Result, 1), make(chan Result, 1)
		go func() { resA <- a.Process(context.Background(), m) }()
		wait(t, g.arrived, "A's first Startdeliver call")
		go func() { resB <- b.Process(context.Background(), m) }()
		wait(t, held, "B's copy to find A's claim")
		g.release()
		if ra, rb := <-resA, <-resB; ra.Outcome != OutcomeDelivered || rb.Outcome != OutcomeDuplicate {
			t.Errorf("copy-%d: A %s (%v), B %s (%v); want A delivered and B duplicate", i, ra.Outcome, ra.Err, rb.Outcome, rb.Err)
		}
	}
	if got := len(f.sd.Usage(key)); got != events {
		t.Errorf("usage records = %d for %d events sent twice, want %d", got, events, events)
	}
	if got := len(f.sd.Users(key)); got != events {
		t.Errorf("users = %d for %d people, want %d", got, events, events)
	}
}

// wait waits for ch to close, failing the test after a generous bound.
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("no sign of %s after 30s", what)
	}
}

// TestNackReleasesClaim: an event nacked without a record of its own (its
// budget ran out while Startdeliver did not answer) gives its claim back,
// so its redelivery to another instance runs at once instead of waiting
// for the claim to go stale.
func TestNackReleasesClaim(t *testing.T) {
	f := newFixture(t, simple)
	f.sd.FailFraction(1, startdelivertest.Fault{Hang: true})
	slow, reader := instances(t, f, 1, 200*time.Millisecond, f.sd.URL(), nil)
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
