package identity

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/shared/emulatortest"
)

// TestOneCreatorAmongMany: 20 instances race for one identity; exactly one
// creates, the others get its id.
func TestOneCreatorAmongMany(t *testing.T) {
	env := emulatortest.Require(t)
	fs := emulatortest.Firestore(t, env)
	col := emulatortest.Name(t, "identities")
	key := Key("acct", "user", "externalId", "u-1")
	var creators atomic.Int32
	ids := make([]int64, 20)
	var wg sync.WaitGroup
	for i := range ids {
		c := New(fs, Options{Collection: col, Wait: 20 * time.Second}) // one per instance
		wg.Go(func() {
			cl, err := c.Acquire(context.Background(), key)
			if err != nil {
				t.Errorf("Acquire: %v", err)
				return
			}
			if cl.ID != 0 {
				ids[i] = cl.ID
				return
			}
			creators.Add(1)
			time.Sleep(20 * time.Millisecond) // the create call to Startdeliver
			if err := c.Created(context.Background(), cl, 4242); err != nil {
				t.Errorf("Created: %v", err)
			}
			ids[i] = 4242
		})
	}
	wg.Wait()
	if n := creators.Load(); n != 1 {
		t.Errorf("%d instances created the identity, want 1", n)
	}
	for i, id := range ids {
		if id != 4242 {
			t.Errorf("instance %d got id %d, want 4242", i, id)
		}
	}
}

func TestBusyThenStaleTakeover(t *testing.T) {
	env := emulatortest.Require(t)
	fs := emulatortest.Firestore(t, env)
	col := emulatortest.Name(t, "identities")
	now := time.Now()
	clock := func() time.Time { return now }
	key := Key("acct", "user", "email", "a@example.com")
	first := New(fs, Options{Collection: col, Now: clock})
	if _, err := first.Acquire(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	// The first creator vanishes. Another instance waits, then gives up.
	second := New(fs, Options{Collection: col, Wait: 200 * time.Millisecond})
	if _, err := second.Acquire(context.Background(), key); !errors.Is(err, ErrBusy) {
		t.Fatalf("Acquire while held = %v, want ErrBusy", err)
	}
	// After Stale, the claim is taken over, and the taker is told to look
	// the entity up first.
	later := New(fs, Options{Collection: col, Now: func() time.Time { return now.Add(Stale + time.Second) }})
	cl, err := later.Acquire(context.Background(), key)
	if err != nil || cl.ID != 0 || !cl.TakenOver {
		t.Errorf("Acquire after Stale = %+v, %v; want a taken-over claim", cl, err)
	}
}

// TestOneTakerOfAStaleClaim: many instances find the same stale claim at
// once; exactly one takes it over, the others wait for it.
func TestOneTakerOfAStaleClaim(t *testing.T) {
	env := emulatortest.Require(t)
	if os.Getenv("FIRESTORE_EMULATOR_KIND") == "npm" {
		t.Skip("the npm Firestore fallback ignores update-time preconditions")
	}
	fs := emulatortest.Firestore(t, env)
	col := emulatortest.Name(t, "identities")
	now := time.Now()
	key := Key("acct", "user", "email", "stale@example.com")
	if _, err := New(fs, Options{Collection: col, Now: func() time.Time { return now }}).Acquire(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	later := func() time.Time { return now.Add(Stale + time.Second) }
	var takers, busy atomic.Int32
	var wg sync.WaitGroup
	for range 10 {
		c := New(fs, Options{Collection: col, Now: later, Wait: 300 * time.Millisecond})
		wg.Go(func() {
			cl, err := c.Acquire(context.Background(), key)
			switch {
			case errors.Is(err, ErrBusy):
				busy.Add(1)
			case err != nil:
				t.Errorf("Acquire: %v", err)
			case cl.ID == 0 && cl.TakenOver:
				takers.Add(1)
			default:
				t.Errorf("Acquire = %+v, want a takeover or ErrBusy", cl)
			}
		})
	}
	wg.Wait()
	if n := takers.Load(); n != 1 {
		t.Errorf("%d instances took the stale claim over, want 1 (%d busy)", n, busy.Load())
	}
}

func TestReleaseLetsNextCreate(t *testing.T) {
	env := emulatortest.Require(t)
	fs := emulatortest.Firestore(t, env)
	col := emulatortest.Name(t, "identities")
	key := Key("acct", "customer", "customfieldCustomId", 7)
	a := New(fs, Options{Collection: col})
	cl, err := a.Acquire(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Release(context.Background(), cl); err != nil {
		t.Fatal(err)
	}
	b := New(fs, Options{Collection: col, Wait: 100 * time.Millisecond})
	if cl, err := b.Acquire(context.Background(), key); err != nil || cl.ID != 0 || cl.TakenOver {
		t.Errorf("Acquire after Release = %+v, %v; want a fresh claim", cl, err)
	}
}

func TestKeyDistinguishesValues(t *testing.T) {
	if Key("a", "user", "f", "1") == Key("a", "user", "f", 1) {
		t.Errorf("string \"1\" and number 1 share a key")
	}
	if Key("a", "user", "f", "x") == Key("b", "user", "f", "x") {
		t.Errorf("two accounts share a key")
	}
}
