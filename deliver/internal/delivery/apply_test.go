package delivery

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/deliver/internal/identity"
	"github.com/startdeliver/segment-destination/shared/envelope"
)

// gatedClaims lets the caller create, once open is closed.
type gatedClaims struct {
	open     chan struct{}
	mu       sync.Mutex
	acquired int
}

func (g *gatedClaims) Acquire(ctx context.Context, _ string) (*identity.Claim, error) {
	g.mu.Lock()
	g.acquired++
	g.mu.Unlock()
	select {
	case <-g.open:
		return &identity.Claim{}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (g *gatedClaims) Created(context.Context, *identity.Claim, int64) error { return nil }
func (g *gatedClaims) Release(context.Context, *identity.Claim) error        { return nil }

// TestWaitingForACreationHoldsNoSlot: with one slot per account, three
// events for one new person wait (one for the claim, two for its creation)
// without holding the slot, so another person's event of the same account
// is delivered meanwhile; once the claim is granted the person is created
// once and all three events land.
func TestWaitingForACreationHoldsNoSlot(t *testing.T) {
	f := newFixture(t, simple)
	claims := &gatedClaims{open: make(chan struct{})}
	f.p = New(Options{Accounts: f.acc, Completions: f.done, Claims: claims, DeadLetters: f.dead, PerAccount: 1, Budget: time.Minute,
		Client: f.p.opts.Client})
	known := f.sd.AddUser(key, map[string]any{"externalId": "known"})
	var wg sync.WaitGroup
	results := make([]Result, 3)
	for i := range results {
		wg.Go(func() {
			results[i] = f.p.Process(context.Background(), message(t, fmt.Sprintf(`{"type":"track","userId":"new","event":"e","messageId":"n-%d"}`, i)))
		})
	}
	// All three started and none holds the slot: one waits for the claim,
	// two for its creation.
	for {
		running, queued := f.p.sched.load(envelope.AccountID(key))
		claims.mu.Lock()
		acquired := claims.acquired
		claims.mu.Unlock()
		f.p.apply.mu.Lock()
		creating := len(f.p.apply.creating)
		f.p.apply.mu.Unlock()
		if acquired == 1 && creating == 1 && running == 0 && queued == 0 && f.sd.Calls("GET /user") == 3 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	res := f.p.Process(context.Background(), message(t, `{"type":"track","userId":"known","event":"e","messageId":"k-1"}`))
	if res.Outcome != OutcomeDelivered {
		t.Fatalf("another person's event while a creation waits = %s (%v), want delivered", res.Outcome, res.Err)
	}
	close(claims.open)
	wg.Wait()
	for i, r := range results {
		if r.Outcome != OutcomeDelivered {
			t.Errorf("event n-%d = %s (%v), want delivered", i, r.Outcome, r.Err)
		}
	}
	if users := f.sd.Users(key); len(users) != 2 {
		t.Errorf("users = %d, want 2 (the known one and one new)", len(users))
	}
	if n := len(f.sd.Usage(key)); n != 4 {
		t.Errorf("usage records = %d, want 4", n)
	}
	for _, u := range f.sd.Usage(key) {
		if u["externalId"] == "k-1" && fmt.Sprint(u["user"]) != fmt.Sprint(known) {
			t.Errorf("k-1's usage user = %v, want the known user %d", u["user"], known)
		}
	}
}
