package dedupe

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/startdeliver/segment-destination/shared/batch"
	"github.com/startdeliver/segment-destination/shared/emulatortest"
)

// Methods a holder holds, by their full gRPC names.
const (
	claimMethod  = "/google.firestore.v1.Firestore/BatchWrite"
	commitMethod = "/google.firestore.v1.Firestore/Commit"
)

// holder holds, or fails, the calls of one method, for a test to control
// what is in flight.
type holder struct {
	method  string
	hold    func(n int64) bool // whether to hold the nth call of method
	fail    error              // every call of method fails with it
	n       atomic.Int64
	entered chan int64    // the number of each call held, as it arrives
	release chan struct{} // a send releases one held call; closed at the end
}

func newHolder(t *testing.T, method string, hold func(n int64) bool) *holder {
	h := &holder{method: method, hold: hold, entered: make(chan int64, 100), release: make(chan struct{})}
	t.Cleanup(func() { close(h.release) })
	return h
}

func (h *holder) before(method string) error {
	if h == nil || method != h.method {
		return nil
	}
	if n := h.n.Add(1); h.hold != nil && h.hold(n) {
		h.entered <- n
		<-h.release
	}
	return h.fail
}

// first holds only the first call.
func first(n int64) bool { return n == 1 }

// all holds every call.
func all(int64) bool { return true }

// wiredFirestore returns an emulator client whose calls are counted
// (emulatortest.Wire) and whose unary calls go through h (which may be
// nil), after they are counted.
func wiredFirestore(t *testing.T, env emulatortest.Env, h *holder) (*firestore.Client, *emulatortest.Wire) {
	t.Helper()
	return emulatortest.CountingFirestore(t, env,
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if err := h.before(method); err != nil {
				return err
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}))
}

// noEscape makes queued ops wait for the call in flight however long it
// takes, so that a test decides what goes in which call.
func noEscape(s *Store) *Store {
	o := claimOptions()
	o.MinWait, o.MaxWait = time.Hour, time.Hour
	s.claims = batch.New(s.claim, o)
	return s
}

// waitQueued waits until n ops wait in b.
func waitQueued(t *testing.T, b *batch.Batcher[*op], n int) {
	t.Helper()
	for b.Stats().Queued != n {
		time.Sleep(time.Millisecond)
	}
}

type answer struct {
	done bool // the event was completed before
	err  error
}

// claim claims the event id of account "acct".
func claim(ctx context.Context, s *Store, id string) (bool, error) {
	c, err := s.Claim(ctx, &Record{AccountID: "acct", MessageID: id})
	if err != nil {
		return false, err
	}
	return c.Completed, nil
}

// doneAsync claims in a goroutine.
func doneAsync(ctx context.Context, s *Store, id string) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		done, err := claim(ctx, s, id)
		ch <- answer{done, err}
	}()
	return ch
}

// completeAsync calls Complete in a goroutine.
func completeAsync(s *Store, id, outcome string) <-chan error {
	ch := make(chan error, 1)
	go func() {
		ch <- s.Complete(context.Background(), &Record{AccountID: "acct", MessageID: id, Status: outcome})
	}()
	return ch
}

func TestConcurrentCallsShareRoundTrips(t *testing.T) {
	env := emulatortest.Require(t)
	fs, w := wiredFirestore(t, env, nil)
	col := emulatortest.Name(t, "deliveries")
	ctx := context.Background()
	const n = 300
	id := func(i int) string { return fmt.Sprintf("m-%d", i) }

	writer := New(fs, Options{Collection: col})
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i += 2 { // every other event is complete
		wg.Go(func() {
			<-start
			errs[i] = writer.Complete(ctx, &Record{AccountID: "acct", MessageID: id(i), Status: "delivered"})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Complete(%s) = %v", id(i), err)
		}
	}
	// Records are never batched: each leaves at once in a Commit of its
	// own, to keep the crash window of a finished event to one write.
	if c, b := w.Calls("Commit"), w.Calls("BeginTransaction"); c != n/2 || b != 0 {
		t.Errorf("%d concurrent Complete calls took %d Commit and %d BeginTransaction calls, want %d and 0", n/2, c, b, n/2)
	}
	t.Logf("%d concurrent Complete calls: %d Commit and %d BeginTransaction calls", n/2, w.Calls("Commit"), w.Calls("BeginTransaction"))

	reader := New(fs, Options{Collection: col}) // another instance, cold cache
	writes0 := w.Writes.Load()
	start = make(chan struct{})
	answers := make([]answer, n)
	for i := range n {
		wg.Go(func() {
			<-start
			done, err := claim(ctx, reader, id(i))
			answers[i] = answer{done, err}
		})
	}
	close(start)
	wg.Wait()
	for i, a := range answers {
		if a.err != nil || a.done != (i%2 == 0) {
			t.Errorf("Claim(%s): completed = %v, %v; want %v, nil", id(i), a.done, a.err, i%2 == 0)
		}
	}
	if got := w.Calls("BatchWrite"); got >= n/2 {
		t.Errorf("%d concurrent Claim calls took %d BatchWrite calls, want fewer than %d", n, got, n/2)
	}
	if got := w.Writes.Load() - writes0; got != n {
		t.Errorf("creates sent = %d, want %d (one per document)", got, n)
	}
	if got := w.Reads.Load(); got != n/2 {
		t.Errorf("documents read = %d, want %d (the completed ones, once each)", got, n/2)
	}
	t.Logf("%d concurrent Claim calls: %d BatchWrite calls, %d BatchGetDocuments calls", n, w.Calls("BatchWrite"), w.Calls("BatchGetDocuments"))

	snap, err := fs.Collection(col).Doc(Key("acct", id(42))).Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := snap.Data()
	completed, _ := d["completedAt"].(time.Time)
	expires, _ := d["expireAt"].(time.Time)
	if d["accountId"] != "acct" || d["messageId"] != id(42) || d["status"] != "delivered" || !expires.Equal(completed.Add(Retention)) {
		t.Errorf("record of %s = %v, want its account, messageId, status, and expireAt = completedAt + %s", id(42), d, Retention)
	}
}

func TestCallsQueuedBehindOneInFlightGoTogether(t *testing.T) {
	env := emulatortest.Require(t)
	ctx := context.Background()

	t.Run("claims", func(t *testing.T) {
		h := newHolder(t, claimMethod, first)
		fs, w := wiredFirestore(t, env, h)
		col := emulatortest.Name(t, "deliveries")
		if err := New(fs, Options{Collection: col}).Complete(ctx, &Record{AccountID: "acct", MessageID: "m-7", Status: "delivered"}); err != nil {
			t.Fatal(err)
		}
		s := noEscape(New(fs, Options{Collection: col}))
		lead := doneAsync(ctx, s, "m-0")
		<-h.entered
		const queued = maxBatch - 1 // a full batch would go at once
		answers := make([]<-chan answer, queued)
		for i := range answers {
			answers[i] = doneAsync(ctx, s, fmt.Sprintf("m-%d", i+1))
		}
		waitQueued(t, s.claims, queued)
		h.release <- struct{}{}
		if a := <-lead; a.err != nil || a.done {
			t.Errorf("Claim(m-0): completed = %v, %v; want false, nil", a.done, a.err)
		}
		for i, ch := range answers {
			want := i+1 == 7
			if a := <-ch; a.err != nil || a.done != want {
				t.Errorf("Claim(m-%d): completed = %v, %v; want %v, nil", i+1, a.done, a.err, want)
			}
		}
		if got := w.Calls("BatchWrite"); got != 2 {
			t.Errorf("%d Claim calls queued behind one call took %d more BatchWrite calls, want 1", queued, got-1)
		}
	})

	t.Run("writes leave at once", func(t *testing.T) {
		// A record never waits behind another in flight: while one
		// Commit is held, the next record is written and confirmed.
		h := newHolder(t, commitMethod, first)
		fs, w := wiredFirestore(t, env, h)
		col := emulatortest.Name(t, "deliveries")
		s := noEscape(New(fs, Options{Collection: col}))
		lead := completeAsync(s, "m-0", "delivered")
		<-h.entered
		if err := <-completeAsync(s, "m-1", "delivered"); err != nil {
			t.Errorf("Complete(m-1) while m-0's write is held = %v, want nil", err)
		}
		h.release <- struct{}{}
		if err := <-lead; err != nil {
			t.Errorf("Complete(m-0) = %v", err)
		}
		if c, b := w.Calls("Commit"), w.Calls("BeginTransaction"); c != 2 || b != 0 {
			t.Errorf("2 records took %d Commit and %d BeginTransaction calls, want 2 and 0", c, b)
		}
		other := New(fs, Options{Collection: col})
		for _, id := range []string{"m-0", "m-1"} {
			if done, err := claim(ctx, other, id); err != nil || !done {
				t.Errorf("another instance: Claim(%s): completed = %v, %v; want true", id, done, err)
			}
		}
	})
}

func TestFailedCallReachesEveryWaiter(t *testing.T) {
	env := emulatortest.Require(t)
	ctx := context.Background()

	t.Run("claims", func(t *testing.T) {
		h := newHolder(t, claimMethod, first)
		h.fail = status.Error(codes.PermissionDenied, "injected")
		fs, w := wiredFirestore(t, env, h)
		s := noEscape(New(fs, Options{Collection: emulatortest.Name(t, "deliveries")}))
		answers := []<-chan answer{doneAsync(ctx, s, "m-0")}
		<-h.entered
		const queued = maxBatch - 1 // a full batch would go at once
		for i := range queued {
			answers = append(answers, doneAsync(ctx, s, fmt.Sprintf("m-%d", i+1)))
		}
		waitQueued(t, s.claims, queued)
		h.release <- struct{}{}
		for i, ch := range answers {
			a := <-ch
			if status.Code(a.err) != codes.PermissionDenied || !strings.Contains(a.err.Error(), fmt.Sprintf("claim event m-%d:", i)) {
				t.Errorf("Claim(m-%d) = %v, %v; want the call's PermissionDenied, naming m-%d", i, a.done, a.err, i)
			}
		}
		if got := w.Calls("BatchWrite"); got != 2 {
			t.Errorf("BatchWrite calls = %d, want 2", got)
		}
	})

	t.Run("writes", func(t *testing.T) {
		h := newHolder(t, commitMethod, first)
		h.fail = status.Error(codes.FailedPrecondition, "injected")
		fs, _ := wiredFirestore(t, env, h)
		s := New(fs, Options{Collection: emulatortest.Name(t, "deliveries")})
		ch := completeAsync(s, "m-0", "delivered")
		<-h.entered
		h.release <- struct{}{}
		if err := <-ch; status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "record completion m-0:") {
			t.Errorf("Complete(m-0) = %v; want the call's FailedPrecondition, naming m-0", err)
		}
	})
}

func TestCancelledWaiterReturnsAtOnce(t *testing.T) {
	env := emulatortest.Require(t)
	ctx := context.Background()
	h := newHolder(t, claimMethod, all)
	fs, w := wiredFirestore(t, env, h)
	col := emulatortest.Name(t, "deliveries")
	for _, id := range []string{"m-1", "m-2", "m-3"} {
		if err := New(fs, Options{Collection: col}).Complete(ctx, &Record{AccountID: "acct", MessageID: id, Status: "delivered"}); err != nil {
			t.Fatal(err)
		}
	}
	writes0 := w.Writes.Load()
	s := noEscape(New(fs, Options{Collection: col}))
	lead := doneAsync(ctx, s, "m-0")
	<-h.entered // call 1: m-0, held

	// Queued behind it: m-1 first (its context carries the next call), then
	// m-2, then m-3.
	ctx1, cancel1 := context.WithCancel(ctx)
	defer cancel1()
	ctx3, cancel3 := context.WithCancel(ctx)
	defer cancel3()
	one := doneAsync(ctx1, s, "m-1")
	waitQueued(t, s.claims, 1)
	two := doneAsync(ctx, s, "m-2")
	waitQueued(t, s.claims, 2)
	three := doneAsync(ctx3, s, "m-3")
	waitQueued(t, s.claims, 3)

	cancel3() // while queued: returns, and is not sent
	if a := <-three; !errors.Is(a.err, context.Canceled) || a.done {
		t.Errorf("Claim(m-3) cancelled while queued = %v, %v; want context.Canceled", a.done, a.err)
	}
	if got := s.claims.Stats().Queued; got != 2 {
		t.Errorf("%d ops queued after a cancelled one left, want 2", got)
	}

	h.release <- struct{}{} // call 1 returns; call 2 (m-1, m-2) goes, held
	if a := <-lead; a.err != nil || a.done {
		t.Errorf("Claim(m-0): completed = %v, %v; want false, nil", a.done, a.err)
	}
	<-h.entered
	cancel1() // while its call is held: returns without it
	if a := <-one; !errors.Is(a.err, context.Canceled) || a.done {
		t.Errorf("Claim(m-1) cancelled in flight = %v, %v; want context.Canceled", a.done, a.err)
	}
	h.release <- struct{}{}
	if a := <-two; a.err != nil || !a.done {
		t.Errorf("Claim(m-2), in the call of a cancelled caller: completed = %v, %v; want true, nil", a.done, a.err)
	}
	if got, want := w.Writes.Load()-writes0, int64(3); got != want || w.Calls("BatchWrite") != 2 {
		t.Errorf("creates sent = %d in %d calls, want %d in 2 (m-3 never sent)", got, w.Calls("BatchWrite"), want)
	}
}

func TestQueuedCallsEscapeASlowCall(t *testing.T) {
	env := emulatortest.Require(t)
	ctx := context.Background()
	h := newHolder(t, claimMethod, first)
	fs, _ := wiredFirestore(t, env, h)
	s := New(fs, Options{Collection: emulatortest.Name(t, "deliveries")})
	lead := doneAsync(ctx, s, "m-0")
	<-h.entered // held until the end of the test
	for i := range 5 {
		if a := <-doneAsync(ctx, s, fmt.Sprintf("m-%d", i+1)); a.err != nil || a.done {
			t.Errorf("Claim(m-%d) behind a stuck call: completed = %v, %v; want false, nil", i+1, a.done, a.err)
		}
	}
	h.release <- struct{}{}
	if a := <-lead; a.err != nil {
		t.Errorf("Claim(m-0) = %v", a.err)
	}
}

func TestLoneCallGoesAtOnce(t *testing.T) {
	env := emulatortest.Require(t)
	ctx := context.Background()
	fs, w := wiredFirestore(t, env, nil)
	// No escape timer: a lone call that waited for anything would hang.
	s := noEscape(New(fs, Options{Collection: emulatortest.Name(t, "deliveries")}))
	for i := range 3 {
		id := fmt.Sprintf("m-%d", i)
		if done, err := claim(ctx, s, id); err != nil || done {
			t.Fatalf("Claim(%s): completed = %v, %v; want false, nil", id, done, err)
		}
		if err := s.Complete(ctx, &Record{AccountID: "acct", MessageID: id, Status: "delivered"}); err != nil {
			t.Fatalf("Complete(%s) = %v", id, err)
		}
	}
	if cl, c := w.Calls("BatchWrite"), w.Calls("Commit"); cl != 3 || c != 3 || w.Calls() != 6 {
		t.Errorf("3 lone Claim and Complete calls took %d BatchWrite and %d Commit calls (%d calls in all), want 3, 3 and nothing else", cl, c, w.Calls())
	}
}

func TestOneDocumentTwiceInABatch(t *testing.T) {
	env := emulatortest.Require(t)
	ctx := context.Background()
	h := newHolder(t, claimMethod, first)
	fs, w := wiredFirestore(t, env, h)
	col := emulatortest.Name(t, "deliveries")
	s := noEscape(New(fs, Options{Collection: col}))
	lead := doneAsync(ctx, s, "m-0")
	<-h.entered
	a, b := doneAsync(ctx, s, "m-1"), doneAsync(ctx, s, "m-1")
	waitQueued(t, s.claims, 2)
	writes0 := w.Writes.Load()
	h.release <- struct{}{}
	<-lead
	// One of the two copies holds the claim; the other is told to wait.
	var claimed, held int
	for _, ch := range []<-chan answer{a, b} {
		switch got := <-ch; {
		case got.err == nil && !got.done:
			claimed++
		case errors.Is(got.err, ErrHeld):
			held++
		default:
			t.Errorf("Claim(m-1) = %v, %v; want a claim or ErrHeld", got.done, got.err)
		}
	}
	if claimed != 1 || held != 1 {
		t.Errorf("two copies in one batch: %d claimed, %d held; want 1 and 1", claimed, held)
	}
	if got := w.Writes.Load() - writes0; got != 1 {
		t.Errorf("creates sent = %d, want 1 (m-1 once)", got)
	}
}
