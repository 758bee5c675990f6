package dedupe

import (
	"container/list"
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/shared/emulatortest"
	"github.com/startdeliver/segment-destination/shared/journey"
	"github.com/startdeliver/segment-destination/shared/waitfor"
)

func TestClaimAcrossInstances(t *testing.T) {
	env := emulatortest.Require(t)
	fs, wire := emulatortest.CountingFirestore(t, env)
	col := emulatortest.Name(t, "deliveries")
	ctx := context.Background()
	a := New(fs, Options{Collection: col})
	b := New(fs, Options{Collection: col}) // another instance, cold cache
	c, err := a.Claim(ctx, &Record{AccountID: "acct", MessageID: "m-1", Type: "track", UserID: "u-1"})
	if err != nil || c.Completed {
		t.Fatalf("first Claim = %+v, %v; want a claim", c, err)
	}
	// While a runs it, the event's record says pending (the console's
	// status for an event not processed yet), and another instance's copy
	// must wait.
	rec, err := journey.NewReader(fs, col).Get(ctx, "acct", "m-1")
	if err != nil || rec.Status != journey.StatusPending || rec.Type != "track" || rec.UserID != "u-1" {
		t.Errorf("record while claimed = %+v, %v; want status pending with the event's type and userId", rec, err)
	}
	if _, err := b.Claim(ctx, &Record{AccountID: "acct", MessageID: "m-1"}); !errors.Is(err, ErrHeld) {
		t.Errorf("another instance's Claim while a runs the event = %v, want ErrHeld", err)
	}
	if done, err := claim(ctx, b, "other-msg"); err != nil || done {
		t.Errorf("another event: completed = %v, %v; want a claim", done, err)
	}
	if _, err := b.Claim(ctx, &Record{AccountID: "other-acct", MessageID: "m-1"}); err != nil {
		t.Errorf("the same messageId of another account: %v, want a claim of its own", err)
	}
	if err := a.Complete(ctx, &Record{AccountID: "acct", MessageID: "m-1", Status: "delivered"}); err != nil {
		t.Fatal(err)
	}
	calls := wire.Calls()
	if done, _ := claim(ctx, a, "m-1"); !done {
		t.Errorf("the same instance after Complete: not completed")
	}
	if got := wire.Calls() - calls; got != 0 {
		t.Errorf("the same instance made %d Firestore calls for a completion it made, want 0", got)
	}
	if done, err := claim(ctx, b, "m-1"); err != nil || !done {
		t.Errorf("another instance after Complete: completed = %v, %v; want true", done, err)
	}
	snap, err := fs.Collection(col).Doc(Key("acct", "m-1")).Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exp, _ := snap.Data()["expireAt"].(time.Time)
	if time.Until(exp) < 7*24*time.Hour {
		t.Errorf("expireAt = %v, want at least 7 days ahead", exp)
	}
	if _, ok := snap.Data()["owner"]; ok {
		t.Errorf("a completed record still names its claim's owner")
	}
}

// TestOneClaimAmongMany: copies of one event claimed at once by ten
// instances: exactly one runs it.
func TestOneClaimAmongMany(t *testing.T) {
	env := emulatortest.Require(t)
	fs := emulatortest.Firestore(t, env)
	col := emulatortest.Name(t, "deliveries")
	var wg sync.WaitGroup
	var mu sync.Mutex
	claimed, held := 0, 0
	start := make(chan struct{})
	for range 10 {
		s := New(fs, Options{Collection: col})
		wg.Go(func() {
			<-start
			c, err := s.Claim(context.Background(), &Record{AccountID: "acct", MessageID: "m"})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && !c.Completed:
				claimed++
			case errors.Is(err, ErrHeld):
				held++
			default:
				t.Errorf("Claim = %+v, %v", c, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if claimed != 1 || held != 9 {
		t.Errorf("10 instances claiming one event: %d claimed, %d told to wait; want 1 and 9", claimed, held)
	}
}

// TestStaleClaimIsTakenOver: a claim whose owner vanished blocks others for
// Stale (by Firestore's clock), then one of them takes it over; the
// vanished owner's late release does not undo the takeover.
func TestStaleClaimIsTakenOver(t *testing.T) {
	if os.Getenv("FIRESTORE_EMULATOR_KIND") == "npm" {
		t.Skip("the npm Firestore emulator ignores update-time preconditions")
	}
	env := emulatortest.Require(t)
	fs := emulatortest.Firestore(t, env)
	col := emulatortest.Name(t, "deliveries")
	ctx := context.Background()
	const stale = 300 * time.Millisecond
	gone := New(fs, Options{Collection: col, Stale: stale})
	lost, err := gone.Claim(ctx, &Record{AccountID: "acct", MessageID: "m"})
	if err != nil {
		t.Fatal(err)
	}
	heir := New(fs, Options{Collection: col, Stale: stale})
	if _, err := heir.Claim(ctx, &Record{AccountID: "acct", MessageID: "m"}); !errors.Is(err, ErrHeld) {
		t.Fatalf("Claim of a fresh claim = %v, want ErrHeld", err)
	}
	var took *Claim
	waitfor.Within(t, 10*time.Second, "the stale claim is taken over", func() bool {
		c, err := heir.Claim(ctx, &Record{AccountID: "acct", MessageID: "m"})
		if err != nil && !errors.Is(err, ErrHeld) {
			t.Fatal(err)
		}
		took = c
		return err == nil
	})
	if took.Completed {
		t.Fatalf("takeover = %+v, want a claim", took)
	}
	if err := gone.Release(ctx, lost); err != nil {
		t.Fatal(err)
	}
	third := New(fs, Options{Collection: col}) // default Stale: the heir's claim is fresh
	if _, err := third.Claim(ctx, &Record{AccountID: "acct", MessageID: "m"}); !errors.Is(err, ErrHeld) {
		t.Errorf("after the vanished owner's late release, a third instance's Claim = %v; want ErrHeld (the heir's claim stands)", err)
	}
}

// TestReleaseAndOwnClaim: a released claim is free at once for another
// instance, and an instance takes over its own earlier claim (the copy
// that held it here has ended: the delivery guard runs one at a time).
func TestReleaseAndOwnClaim(t *testing.T) {
	env := emulatortest.Require(t)
	fs := emulatortest.Firestore(t, env)
	col := emulatortest.Name(t, "deliveries")
	ctx := context.Background()
	a, b := New(fs, Options{Collection: col}), New(fs, Options{Collection: col})
	first, err := a.Claim(ctx, &Record{AccountID: "acct", MessageID: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Claim(ctx, &Record{AccountID: "acct", MessageID: "m"}); err != nil {
		t.Errorf("Claim of this instance's own earlier claim = %v, want a claim", err)
	}
	if _, err := b.Claim(ctx, &Record{AccountID: "acct", MessageID: "m"}); !errors.Is(err, ErrHeld) {
		t.Errorf("another instance's Claim = %v, want ErrHeld", err)
	}
	// The first claim was taken over (by a itself): releasing it is a no-op.
	if err := a.Release(ctx, first); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Claim(ctx, &Record{AccountID: "acct", MessageID: "m"}); !errors.Is(err, ErrHeld) {
		t.Errorf("after releasing a superseded claim, another instance's Claim = %v, want ErrHeld", err)
	}
	second, err := a.Claim(ctx, &Record{AccountID: "acct", MessageID: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, second); err != nil {
		t.Fatal(err)
	}
	if done, err := claim(ctx, b, "n"); err != nil || done {
		t.Errorf("after release, another instance: completed = %v, %v; want a claim", done, err)
	}
}

func TestExpiredCompletionIsNotDone(t *testing.T) {
	env := emulatortest.Require(t)
	fs := emulatortest.Firestore(t, env)
	col := emulatortest.Name(t, "deliveries")
	past := func() time.Time { return time.Now().Add(-9 * 24 * time.Hour) }
	ctx := context.Background()
	if err := New(fs, Options{Collection: col, Now: past}).Complete(ctx, &Record{AccountID: "a", MessageID: "old", Status: "delivered"}); err != nil {
		t.Fatal(err)
	}
	c, err := New(fs, Options{Collection: col}).Claim(ctx, &Record{AccountID: "a", MessageID: "old"})
	if err != nil || c.Completed {
		t.Errorf("Claim of a completion past its expiry = %+v, %v; want a claim (the TTL sweep may lag)", c, err)
	}
}

func TestCacheIsBounded(t *testing.T) {
	s := &Store{size: 3, index: map[string]*list.Element{}}
	s.lru = list.New()
	for _, k := range []string{"a", "b", "c", "d"} {
		s.remember(k)
	}
	if s.cached("a") || !s.cached("d") || s.lru.Len() != 3 {
		t.Errorf("cache holds %d entries (a cached: %v), want the 3 most recent", s.lru.Len(), s.cached("a"))
	}
}
