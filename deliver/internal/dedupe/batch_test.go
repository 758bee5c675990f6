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
	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/startdeliver/segment-destination/shared/batch"
	"github.com/startdeliver/segment-destination/shared/emulatortest"
)

const (
	getMethod    = "/google.firestore.v1.Firestore/BatchGetDocuments"
	commitMethod = "/google.firestore.v1.Firestore/Commit"
	beginMethod  = "/google.firestore.v1.Firestore/BeginTransaction"
)

// wire counts a client's Firestore calls as they go out on the wire.
type wire struct {
	gets    atomic.Int64 // BatchGetDocuments calls
	docs    atomic.Int64 // documents those calls asked for
	commits atomic.Int64 // Commit calls
	begins  atomic.Int64 // BeginTransaction calls
	others  atomic.Int64 // any other calls (BatchWrite, Rollback, ...)
}

// writes is the number of calls that wrote, or began a transaction to.
func (w *wire) writes() int64 { return w.commits.Load() + w.begins.Load() + w.others.Load() }

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

// wiredFirestore returns an emulator client whose calls are counted and go
// through h (which may be nil).
func wiredFirestore(t *testing.T, env emulatortest.Env, h *holder) (*firestore.Client, *wire) {
	t.Helper()
	w := &wire{}
	c := emulatortest.FirestoreWith(t, env,
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			switch method {
			case commitMethod:
				w.commits.Add(1)
			case beginMethod:
				w.begins.Add(1)
			default:
				w.others.Add(1)
			}
			if err := h.before(method); err != nil {
				return err
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			if method == getMethod {
				w.gets.Add(1)
			}
			if err := h.before(method); err != nil {
				return nil, err
			}
			cs, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, err
			}
			return docCounter{ClientStream: cs, w: w}, nil
		}),
	)
	return c, w
}

// docCounter counts the documents a BatchGetDocuments call asks for.
type docCounter struct {
	grpc.ClientStream
	w *wire
}

func (d docCounter) SendMsg(m any) error {
	if r, ok := m.(*firestorepb.BatchGetDocumentsRequest); ok {
		d.w.docs.Add(int64(len(r.GetDocuments())))
	}
	return d.ClientStream.SendMsg(m)
}

// noEscape makes queued ops wait for the call in flight however long it
// takes, so that a test decides what goes in which call.
func noEscape(s *Store) *Store {
	o := readOptions()
	o.MinWait, o.MaxWait = time.Hour, time.Hour
	s.gets = batch.New(s.read, o)
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
	done bool
	err  error
}

// doneAsync calls Done in a goroutine.
func doneAsync(ctx context.Context, s *Store, id string) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		done, err := s.Done(ctx, "acct", id)
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
	if c, b := w.commits.Load(), w.begins.Load(); c != n/2 || b != 0 {
		t.Errorf("%d concurrent Complete calls took %d Commit and %d BeginTransaction calls, want %d and 0", n/2, c, b, n/2)
	}
	t.Logf("%d concurrent Complete calls: %d Commit and %d BeginTransaction calls", n/2, w.commits.Load(), w.begins.Load())

	reader := New(fs, Options{Collection: col}) // another instance, cold cache
	start = make(chan struct{})
	answers := make([]answer, n)
	for i := range n {
		wg.Go(func() {
			<-start
			done, err := reader.Done(ctx, "acct", id(i))
			answers[i] = answer{done, err}
		})
	}
	close(start)
	wg.Wait()
	for i, a := range answers {
		if a.err != nil || a.done != (i%2 == 0) {
			t.Errorf("Done(%s) = %v, %v; want %v, nil", id(i), a.done, a.err, i%2 == 0)
		}
	}
	if got := w.gets.Load(); got >= n {
		t.Errorf("%d concurrent Done calls took %d BatchGetDocuments calls, want fewer", n, got)
	}
	if got := w.docs.Load(); got != n {
		t.Errorf("documents read = %d, want %d (one per document)", got, n)
	}
	t.Logf("%d concurrent Done calls: %d BatchGetDocuments calls", n, w.gets.Load())

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

	t.Run("reads", func(t *testing.T) {
		h := newHolder(t, getMethod, first)
		fs, w := wiredFirestore(t, env, h)
		col := emulatortest.Name(t, "deliveries")
		if err := New(fs, Options{Collection: col}).Complete(ctx, &Record{AccountID: "acct", MessageID: "m-7", Status: "delivered"}); err != nil {
			t.Fatal(err)
		}
		s := noEscape(New(fs, Options{Collection: col}))
		lead := doneAsync(ctx, s, "m-0")
		<-h.entered
		const queued = 50
		answers := make([]<-chan answer, queued)
		for i := range answers {
			answers[i] = doneAsync(ctx, s, fmt.Sprintf("m-%d", i+1))
		}
		waitQueued(t, s.gets, queued)
		h.release <- struct{}{}
		if a := <-lead; a.err != nil || a.done {
			t.Errorf("Done(m-0) = %v, %v; want false, nil", a.done, a.err)
		}
		for i, ch := range answers {
			want := i+1 == 7
			if a := <-ch; a.err != nil || a.done != want {
				t.Errorf("Done(m-%d) = %v, %v; want %v, nil", i+1, a.done, a.err, want)
			}
		}
		if got := w.gets.Load(); got != 2 {
			t.Errorf("%d Done calls queued behind one read took %d more BatchGetDocuments calls, want 1", queued, got-1)
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
		if c, b := w.commits.Load(), w.begins.Load(); c != 2 || b != 0 {
			t.Errorf("2 records took %d Commit and %d BeginTransaction calls, want 2 and 0", c, b)
		}
		other := New(fs, Options{Collection: col})
		for _, id := range []string{"m-0", "m-1"} {
			if done, err := other.Done(ctx, "acct", id); err != nil || !done {
				t.Errorf("another instance: Done(%s) = %v, %v; want true", id, done, err)
			}
		}
	})
}

func TestFailedCallReachesEveryWaiter(t *testing.T) {
	env := emulatortest.Require(t)
	ctx := context.Background()

	t.Run("reads", func(t *testing.T) {
		h := newHolder(t, getMethod, first)
		h.fail = status.Error(codes.PermissionDenied, "injected")
		fs, w := wiredFirestore(t, env, h)
		s := noEscape(New(fs, Options{Collection: emulatortest.Name(t, "deliveries")}))
		answers := []<-chan answer{doneAsync(ctx, s, "m-0")}
		<-h.entered
		const queued = 30
		for i := range queued {
			answers = append(answers, doneAsync(ctx, s, fmt.Sprintf("m-%d", i+1)))
		}
		waitQueued(t, s.gets, queued)
		h.release <- struct{}{}
		for i, ch := range answers {
			a := <-ch
			if status.Code(a.err) != codes.PermissionDenied || !strings.Contains(a.err.Error(), fmt.Sprintf("read completion m-%d:", i)) {
				t.Errorf("Done(m-%d) = %v, %v; want the call's PermissionDenied, naming m-%d", i, a.done, a.err, i)
			}
		}
		if got := w.gets.Load(); got != 2 {
			t.Errorf("BatchGetDocuments calls = %d, want 2", got)
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
	h := newHolder(t, getMethod, all)
	fs, w := wiredFirestore(t, env, h)
	col := emulatortest.Name(t, "deliveries")
	for _, id := range []string{"m-1", "m-2", "m-3"} {
		if err := New(fs, Options{Collection: col}).Complete(ctx, &Record{AccountID: "acct", MessageID: id, Status: "delivered"}); err != nil {
			t.Fatal(err)
		}
	}
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
	waitQueued(t, s.gets, 1)
	two := doneAsync(ctx, s, "m-2")
	waitQueued(t, s.gets, 2)
	three := doneAsync(ctx3, s, "m-3")
	waitQueued(t, s.gets, 3)

	cancel3() // while queued: returns, and is not read
	if a := <-three; !errors.Is(a.err, context.Canceled) || a.done {
		t.Errorf("Done(m-3) cancelled while queued = %v, %v; want context.Canceled", a.done, a.err)
	}
	if got := s.gets.Stats().Queued; got != 2 {
		t.Errorf("%d ops queued after a cancelled one left, want 2", got)
	}

	h.release <- struct{}{} // call 1 returns; call 2 (m-1, m-2) goes, held
	if a := <-lead; a.err != nil || a.done {
		t.Errorf("Done(m-0) = %v, %v; want false, nil", a.done, a.err)
	}
	<-h.entered
	cancel1() // while its call is held: returns without it
	if a := <-one; !errors.Is(a.err, context.Canceled) || a.done {
		t.Errorf("Done(m-1) cancelled in flight = %v, %v; want context.Canceled", a.done, a.err)
	}
	h.release <- struct{}{}
	if a := <-two; a.err != nil || !a.done {
		t.Errorf("Done(m-2), in the call of a cancelled caller = %v, %v; want true, nil", a.done, a.err)
	}
	if got, want := w.docs.Load(), int64(3); got != want || w.gets.Load() != 2 {
		t.Errorf("documents read = %d in %d calls, want %d in 2 (m-3 never read)", got, w.gets.Load(), want)
	}
}

func TestQueuedCallsEscapeASlowCall(t *testing.T) {
	env := emulatortest.Require(t)
	ctx := context.Background()
	h := newHolder(t, getMethod, first)
	fs, _ := wiredFirestore(t, env, h)
	s := New(fs, Options{Collection: emulatortest.Name(t, "deliveries")})
	lead := doneAsync(ctx, s, "m-0")
	<-h.entered // held until the end of the test
	for i := range 5 {
		if a := <-doneAsync(ctx, s, fmt.Sprintf("m-%d", i+1)); a.err != nil || a.done {
			t.Errorf("Done(m-%d) behind a stuck call = %v, %v; want false, nil", i+1, a.done, a.err)
		}
	}
	h.release <- struct{}{}
	if a := <-lead; a.err != nil {
		t.Errorf("Done(m-0) = %v", a.err)
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
		if done, err := s.Done(ctx, "acct", id); err != nil || done {
			t.Fatalf("Done(%s) = %v, %v; want false, nil", id, done, err)
		}
		if err := s.Complete(ctx, &Record{AccountID: "acct", MessageID: id, Status: "delivered"}); err != nil {
			t.Fatalf("Complete(%s) = %v", id, err)
		}
	}
	if g, c := w.gets.Load(), w.commits.Load(); g != 3 || c != 3 || w.writes() != 3 {
		t.Errorf("3 lone Done and Complete calls took %d BatchGetDocuments and %d Commit calls (%d write calls in all), want 3 each and no transaction", g, c, w.writes())
	}
}

func TestOneDocumentTwiceInABatch(t *testing.T) {
	env := emulatortest.Require(t)
	ctx := context.Background()

	t.Run("reads", func(t *testing.T) {
		h := newHolder(t, getMethod, first)
		fs, w := wiredFirestore(t, env, h)
		col := emulatortest.Name(t, "deliveries")
		if err := New(fs, Options{Collection: col}).Complete(ctx, &Record{AccountID: "acct", MessageID: "m-1", Status: "delivered"}); err != nil {
			t.Fatal(err)
		}
		docs0 := w.docs.Load()
		s := noEscape(New(fs, Options{Collection: col}))
		lead := doneAsync(ctx, s, "m-0")
		<-h.entered
		a, b := doneAsync(ctx, s, "m-1"), doneAsync(ctx, s, "m-1")
		waitQueued(t, s.gets, 2)
		h.release <- struct{}{}
		<-lead
		for _, ch := range []<-chan answer{a, b} {
			if got := <-ch; got.err != nil || !got.done {
				t.Errorf("Done(m-1) = %v, %v; want true, nil", got.done, got.err)
			}
		}
		if got := w.docs.Load() - docs0; got != 2 {
			t.Errorf("documents read = %d, want 2 (m-0, and m-1 once)", got)
		}
	})
}
