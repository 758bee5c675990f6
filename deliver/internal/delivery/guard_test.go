package delivery

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
)

// TestGuardHoldsTheSecondCopy: while one copy of an event runs, a second
// waits (durably blocked, holding nothing) and runs once the first ends;
// another event does not wait; a waiting copy whose context ends leaves
// with its error.
func TestGuardHoldsTheSecondCopy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c copies
		ctx := context.Background()
		release, err := c.own(ctx, "acct", "m")
		if err != nil {
			t.Fatal(err)
		}
		second := make(chan func(), 1)
		go func() {
			r, err := c.own(ctx, "acct", "m")
			if err != nil {
				t.Error(err)
			}
			second <- r
		}()
		other, err := c.own(ctx, "acct", "other")
		if err != nil {
			t.Fatalf("another event waited: %v", err)
		}
		other()
		gone, cancel := context.WithCancel(ctx)
		third := make(chan error, 1)
		go func() {
			_, err := c.own(gone, "acct", "m")
			third <- err
		}()
		synctest.Wait()
		select {
		case <-second:
			t.Fatal("the second copy ran while the first did")
		default:
		}
		cancel()
		if err := <-third; !errors.Is(err, context.Canceled) {
			t.Errorf("a waiting copy whose context ended = %v, want context.Canceled", err)
		}
		release()
		synctest.Wait()
		select {
		case r := <-second:
			r()
		default:
			t.Fatal("the second copy did not run once the first ended")
		}
	})
}
