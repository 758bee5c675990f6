package batch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/shared/waitfor"
)

// item is what the tests batch: a name, a size and an ordering key.
type item struct {
	name string
	size int
	key  string
}

// calls records every call and holds each one until the test releases it
// (held.release) or frees them all.
type calls struct {
	mu      sync.Mutex
	batches [][]string
	entered chan *held
	all     chan struct{} // closed by free: every call returns nil
	once    sync.Once
	// overlap records keys seen in two calls at once.
	inCall  map[string]bool
	overlap []string
}

// held is one call in progress: a send on release makes it return that
// error.
type held struct {
	names   []string
	ctx     context.Context
	release chan error
}

func newCalls(t *testing.T) *calls {
	c := &calls{entered: make(chan *held, 1000), all: make(chan struct{}), inCall: map[string]bool{}}
	t.Cleanup(c.free)
	return c
}

func (c *calls) free() { c.once.Do(func() { close(c.all) }) }

func (c *calls) call(ctx context.Context, batch []item) error {
	h := &held{names: make([]string, len(batch)), ctx: ctx, release: make(chan error, 1)}
	keys := map[string]bool{}
	c.mu.Lock()
	for i, it := range batch {
		h.names[i] = it.name
		if it.key != "" {
			keys[it.key] = true
		}
	}
	for k := range keys {
		if c.inCall[k] {
			c.overlap = append(c.overlap, k)
		}
		c.inCall[k] = true
	}
	c.batches = append(c.batches, h.names)
	c.mu.Unlock()
	c.entered <- h
	var err error
	select {
	case err = <-h.release:
	case <-c.all:
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.mu.Lock()
	for k := range keys {
		delete(c.inCall, k)
	}
	c.mu.Unlock()
	return err
}

// next is the next call to start.
func (c *calls) next(t *testing.T) *held {
	t.Helper()
	select {
	case h := <-c.entered:
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a call")
		return nil
	}
}

func (c *calls) sizes() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]int, len(c.batches))
	for i, b := range c.batches {
		out[i] = len(b)
	}
	return out
}

func add(t *testing.T, b *Batcher[item], it item) *Ticket[item] {
	t.Helper()
	tk, err := b.Add(context.Background(), it)
	if err != nil {
		t.Fatalf("Add(%s) = %v, want nil", it.name, err)
	}
	return tk
}

func named(prefix string, n int) []item {
	out := make([]item, n)
	for i := range out {
		out[i] = item{name: fmt.Sprint(prefix, i)}
	}
	return out
}

// noEscape makes queued items wait for the call in flight however long it
// takes, so that a test decides what goes in which call.
const noEscape = time.Hour

// sorted returns the sizes of calls in increasing order: calls that start
// together may enter in either order.
func sorted(c *calls) []int { return slices.Sorted(slices.Values(c.sizes())) }

// TestSelfClocking: a lone item goes at once; while a partial batch is in
// flight, later items wait and go together when it returns; a full batch
// goes at once, in every free slot.
func TestSelfClocking(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options[item]
		later int   // items added while the first call is held
		calls int   // calls running before the first returns
		want  []int // sizes of every call, in increasing order
	}{
		{name: "partial waits for the call in flight", opts: Options[item]{MinWait: noEscape}, later: 50, calls: 1, want: []int{1, 50}},
		{name: "full batch goes at once", opts: Options[item]{MinWait: noEscape, MaxItems: 10}, later: 10, calls: 2, want: []int{1, 10}},
		{name: "full batches use every slot", opts: Options[item]{MinWait: noEscape, MaxItems: 10, MaxCalls: 3}, later: 35, calls: 3, want: []int{1, 5, 10, 10, 10}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCalls(t)
			b := New(c.call, tc.opts)
			add(t, b, item{name: "first"})
			if got := c.next(t).names; !slices.Equal(got, []string{"first"}) {
				t.Fatalf("first call = %v, want [first]", got)
			}
			for _, it := range named("m", tc.later) {
				add(t, b, it)
			}
			// Calls start under the lock that queues items, and nothing
			// escapes: none can be missing or still to start here.
			if st := b.Stats(); st.InFlight != tc.calls || st.Added != int64(1+tc.later) {
				t.Errorf("while the first call is held: %+v, want %d calls and %d added", st, tc.calls, 1+tc.later)
			}
			c.free()
			b.Stop()
			if got := sorted(c); !slices.Equal(got, tc.want) {
				t.Errorf("call sizes = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSlowCallIsEscaped: items queued behind a partial batch that does not
// return get a call of their own after the escape wait.
func TestSlowCallIsEscaped(t *testing.T) {
	c := newCalls(t)
	b := New(c.call, Options[item]{MinWait: time.Millisecond})
	add(t, b, item{name: "stuck"})
	c.next(t)
	for _, it := range named("m", 5) {
		add(t, b, it)
	}
	got := c.next(t).names // while stuck is held
	if len(got) == 0 || got[0] != "m0" {
		t.Errorf("escaped call = %v, want the queue from m0", got)
	}
	c.free()
	b.Stop()
	if st := b.Stats(); st.Sent != 6 {
		t.Errorf("sent %d items, want 6", st.Sent)
	}
}

func TestLoneItemsGoAtOnce(t *testing.T) {
	c := newCalls(t)
	// No escape: a lone item that waited for anything would hang.
	b := New(c.call, Options[item]{MinWait: noEscape})
	for i := range 3 {
		add(t, b, item{name: fmt.Sprint(i)})
		c.next(t).release <- nil
		waitfor.True(t, "the call to end", func() bool { return b.Stats().InFlight == 0 })
	}
	if got := c.sizes(); !slices.Equal(got, []int{1, 1, 1}) {
		t.Errorf("call sizes = %v, want three calls of one", got)
	}
}

func TestBytes(t *testing.T) {
	size := func(it item) int { return it.size }

	t.Run("MaxBytes bounds a call", func(t *testing.T) {
		c := newCalls(t)
		b := New(c.call, Options[item]{MinWait: noEscape, MaxBytes: 100, Size: size})
		add(t, b, item{name: "first", size: 10})
		c.next(t)
		// a and b fit in one call, c does not; big is over the bound and
		// goes alone. Each is full when queued, so all go now.
		for _, it := range []item{{"a", 40, ""}, {"b", 40, ""}, {"c", 40, ""}, {"big", 150, ""}} {
			add(t, b, it)
		}
		if st := b.Stats(); st.InFlight != 4 || st.Queued != 0 {
			t.Errorf("while first is held: %+v, want 4 calls and nothing queued", st)
		}
		c.free()
		b.Stop()
		c.mu.Lock()
		defer c.mu.Unlock()
		var got []string
		for _, names := range c.batches {
			got = append(got, fmt.Sprint(names))
		}
		slices.Sort(got)
		if want := []string{"[a b]", "[big]", "[c]", "[first]"}; !slices.Equal(got, want) {
			t.Errorf("calls = %v, want %v", got, want)
		}
	})

	t.Run("MaxHeld refuses at once", func(t *testing.T) {
		c := newCalls(t)
		b := New(c.call, Options[item]{MinWait: noEscape, MaxHeld: 100, Size: size})
		add(t, b, item{name: "first", size: 60})
		first := c.next(t)
		add(t, b, item{name: "queued", size: 40})
		if _, err := b.Add(context.Background(), item{name: "over", size: 1}); !errors.Is(err, ErrFull) {
			t.Errorf("Add past MaxHeld = %v, want ErrFull", err)
		}
		if st := b.Stats(); st.Held != 100 || st.Queued != 1 {
			t.Errorf("Stats = %+v, want 100 bytes held, 1 queued", st)
		}
		first.release <- nil // its 60 bytes are free; queued goes
		c.next(t)
		waitfor.True(t, "the first call's bytes freed", func() bool { return b.Stats().Held == 40 })
		add(t, b, item{name: "fits", size: 60})
		if _, err := b.Add(context.Background(), item{name: "over", size: 1}); !errors.Is(err, ErrFull) {
			t.Errorf("Add past MaxHeld = %v, want ErrFull", err)
		}
		c.free()
		b.Stop()
		if st := b.Stats(); st.Held != 0 || st.Sent != 3 {
			t.Errorf("after Stop: %+v, want nothing held and 3 sent", st)
		}
	})
}

func TestWithdraw(t *testing.T) {
	c := newCalls(t)
	b := New(c.call, Options[item]{MinWait: noEscape, MaxItems: 1000, MaxHeld: 1 << 20, Size: func(it item) int { return it.size }})
	inCall := add(t, b, item{name: "first", size: 1})
	c.next(t)
	keep := add(t, b, item{name: "keep", size: 1})
	var gone []*Ticket[item]
	for _, it := range named("gone", 500) {
		it.size = 1000
		gone = append(gone, add(t, b, it))
	}
	for _, tk := range gone {
		if !b.Withdraw(tk) {
			t.Fatalf("Withdraw of a queued item = false, want true")
		}
	}
	if !b.Withdraw(gone[0]) {
		t.Errorf("second Withdraw of a withdrawn item = false, want true")
	}
	if b.Withdraw(inCall) {
		t.Errorf("Withdraw of an item in a call = true, want false")
	}
	if st := b.Stats(); st.Queued != 1 || st.Held != 2 {
		t.Errorf("after withdrawing 500: %+v, want 1 queued, 2 bytes held", st)
	}
	b.mu.Lock()
	slots := len(b.queue)
	b.mu.Unlock()
	if slots > 2*64+2 {
		t.Errorf("queue slice holds %d entries for 1 live item, want withdrawn ones dropped", slots)
	}
	c.free()
	b.Stop()
	if b.Withdraw(keep) {
		t.Errorf("Withdraw of a sent item = true, want false")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if got := fmt.Sprint(c.batches); got != "[[first] [keep]]" {
		t.Errorf("calls = %s, want [[first] [keep]]: nothing withdrawn sent", got)
	}
}

// TestTimerStopsWhenNothingWaits: the escape timer runs only while items
// wait, so a timer armed for items since withdrawn or sent does not hedge
// the ones that come later.
func TestTimerStopsWhenNothingWaits(t *testing.T) {
	c := newCalls(t)
	b := New(c.call, Options[item]{MinWait: noEscape})
	add(t, b, item{name: "first"})
	first := c.next(t)
	tk := add(t, b, item{name: "queued"})
	armed := func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.timer != nil
	}
	if !armed() {
		t.Errorf("no escape timer while an item waits")
	}
	b.Withdraw(tk)
	if armed() {
		t.Errorf("escape timer still armed with nothing queued (after a withdrawal)")
	}
	add(t, b, item{name: "next"})
	first.release <- nil
	c.next(t)
	waitfor.True(t, "the queue to empty", func() bool { return b.Stats().Queued == 0 })
	if armed() {
		t.Errorf("escape timer still armed with nothing queued (after a call took the queue)")
	}
}

// TestStaleTimerDoesNothing: a timer that fires after it was stopped (it
// raced with the call that took the queue) opens no call.
func TestStaleTimerDoesNothing(t *testing.T) {
	c := newCalls(t)
	b := New(c.call, Options[item]{MinWait: noEscape})
	add(t, b, item{name: "first"})
	c.next(t)
	tk := add(t, b, item{name: "gone"})
	b.mu.Lock()
	stale := b.timerGen
	b.mu.Unlock()
	b.Withdraw(tk) // stops the timer
	add(t, b, item{name: "queued"})
	b.escape(stale) // as if the stopped timer had fired anyway
	if st := b.Stats(); st.InFlight != 1 || st.Queued != 1 {
		t.Errorf("after a stale timer: %+v, want queued still behind the call in flight", st)
	}
}

// TestKeys: items of one key go in order and never in two calls at once;
// items of other keys go past a busy one.
func TestKeys(t *testing.T) {
	key := func(it item) string { return it.key }

	t.Run("a full batch goes past a busy key", func(t *testing.T) {
		c := newCalls(t)
		b := New(c.call, Options[item]{MinWait: noEscape, MaxItems: 2, Key: key})
		add(t, b, item{name: "a0", key: "a"})
		c.next(t)
		add(t, b, item{name: "a1", key: "a"})
		add(t, b, item{name: "b0", key: "b"}) // two queued: full
		if got := c.next(t).names; !slices.Equal(got, []string{"b0"}) {
			t.Errorf("full call while a is busy = %v, want [b0]", got)
		}
		if st := b.Stats(); st.Queued != 1 {
			t.Errorf("queued = %d, want a1 behind a0", st.Queued)
		}
		c.free()
		b.Stop()
	})

	t.Run("a key skipped for bytes holds its later items back", func(t *testing.T) {
		c := newCalls(t)
		// One slot: the queue grows past a full batch while first runs.
		b := New(c.call, Options[item]{MinWait: noEscape, MaxCalls: 1, MaxBytes: 100, Size: func(it item) int { return it.size }, Key: key})
		add(t, b, item{name: "first", size: 1})
		first := c.next(t)
		add(t, b, item{name: "c0", size: 60})
		add(t, b, item{name: "a1", size: 50, key: "a"}) // does not fit with c0
		add(t, b, item{name: "a2", size: 10, key: "a"}) // would, but not before a1
		first.release <- nil
		next := c.next(t)
		if !slices.Equal(next.names, []string{"c0"}) {
			t.Errorf("next call = %v, want [c0] (a2 stays behind a1)", next.names)
		}
		next.release <- nil
		if got := c.next(t).names; !slices.Equal(got, []string{"a1", "a2"}) {
			t.Errorf("then = %v, want [a1 a2]", got)
		}
	})

	t.Run("one key's items go together, in order, after its call", func(t *testing.T) {
		c := newCalls(t)
		b := New(c.call, Options[item]{MinWait: noEscape, Key: key})
		add(t, b, item{name: "a0", key: "a"})
		a0 := c.next(t)
		for _, it := range []item{{"a1", 0, "a"}, {"b0", 0, "b"}, {"a2", 0, "a"}, {"c0", 0, "c"}, {"b1", 0, "b"}} {
			add(t, b, it)
		}
		a0.release <- nil
		if got := c.next(t).names; !slices.Equal(got, []string{"a1", "b0", "a2", "c0", "b1"}) {
			t.Errorf("after a0's call = %v, want [a1 b0 a2 c0 b1]", got)
		}
		c.free()
		b.Stop()
		if len(c.overlap) > 0 {
			t.Errorf("keys in two calls at once: %v", c.overlap)
		}
	})
}

// tracked is an item of TestConcurrentUse.
type tracked struct {
	name, key string
	seq       int
	done      chan struct{}
}

// TestConcurrentUse adds, withdraws and answers from many goroutines: every
// item not withdrawn is in exactly one call, no withdrawn item is in any,
// each key's items go in order and never in overlapping calls.
func TestConcurrentUse(t *testing.T) {
	var (
		mu       sync.Mutex
		seen     = map[string]int{}
		inCall   = map[string]bool{}
		last     = map[string]int{}
		problems []string
	)
	call := func(_ context.Context, batch []*tracked) error {
		keys := map[string]bool{}
		mu.Lock()
		for _, it := range batch {
			seen[it.name]++
			keys[it.key] = true
			if it.seq < last[it.key] {
				problems = append(problems, "out of order "+it.name)
			}
			last[it.key] = it.seq
		}
		for k := range keys {
			if inCall[k] {
				problems = append(problems, "overlap "+k)
			}
			inCall[k] = true
		}
		mu.Unlock()
		time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond) // a backend's latency
		mu.Lock()
		for k := range keys {
			delete(inCall, k)
		}
		mu.Unlock()
		for _, it := range batch {
			close(it.done)
		}
		return nil
	}
	b := New(call, Options[*tracked]{MaxItems: 20, MaxCalls: 3, Key: func(it *tracked) string { return it.key }})
	const people, each = 30, 40
	var withdrawn sync.Map
	var wg sync.WaitGroup
	for p := range people {
		wg.Go(func() {
			for i := range each {
				it := &tracked{name: fmt.Sprint(p, "-", i), key: fmt.Sprint("k", p), seq: i, done: make(chan struct{})}
				tk, err := b.Add(context.Background(), it)
				if err != nil {
					t.Errorf("Add = %v", err)
					return
				}
				if rand.IntN(4) == 0 && b.Withdraw(tk) {
					withdrawn.Store(it.name, true)
					continue
				}
				if i%5 == 4 {
					<-it.done // now and then, wait as a handler does
				}
			}
		})
	}
	wg.Wait()
	b.Stop()
	mu.Lock()
	defer mu.Unlock()
	for p := range people {
		for i := range each {
			name := fmt.Sprint(p, "-", i)
			_, w := withdrawn.Load(name)
			switch n := seen[name]; {
			case w && n != 0:
				t.Errorf("%s withdrawn but in %d calls", name, n)
			case !w && n != 1:
				t.Errorf("%s in %d calls, want 1", name, n)
			}
		}
	}
	if len(problems) > 0 {
		t.Errorf("%v", problems)
	}
	if st := b.Stats(); st.Queued != 0 || st.InFlight != 0 || st.Held != 0 || st.Sent+int64(countMap(&withdrawn)) != people*each {
		t.Errorf("after Stop: %+v, want nothing held and every item sent or withdrawn", st)
	}
}

func countMap(m *sync.Map) int {
	n := 0
	m.Range(func(any, any) bool { n++; return true })
	return n
}

func TestStop(t *testing.T) {
	c := newCalls(t)
	b := New(c.call, Options[item]{MinWait: noEscape})
	add(t, b, item{name: "first"})
	first := c.next(t)
	for _, it := range named("q", 3) {
		add(t, b, it)
	}
	stopped := make(chan struct{})
	go func() { b.Stop(); close(stopped) }()
	// Stop sends the queue at once: neither the partial batch in flight
	// nor the escape timer holds it back.
	last := c.next(t)
	if !slices.Equal(last.names, []string{"q0", "q1", "q2"}) {
		t.Errorf("call sent by Stop = %v, want the queue", last.names)
	}
	first.release <- nil
	select {
	case <-stopped:
		t.Errorf("Stop returned with a call in flight")
	default:
	}
	last.release <- nil
	<-stopped
	if _, err := b.Add(context.Background(), item{name: "late"}); !errors.Is(err, ErrStopped) {
		t.Errorf("Add after Stop = %v, want ErrStopped", err)
	}
}

type ctxKey struct{}

// TestCallContext: a call runs under its first item's context values, not
// its cancellation, and within CallTimeout.
func TestCallContext(t *testing.T) {
	c := newCalls(t)
	b := New(c.call, Options[item]{MinWait: noEscape, CallTimeout: time.Minute})
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "trace-1"))
	cancel()
	if _, err := b.Add(ctx, item{name: "first"}); err != nil {
		t.Fatal(err)
	}
	got := c.next(t).ctx
	if v := got.Value(ctxKey{}); v != "trace-1" {
		t.Errorf("call context value = %v, want the first item's trace-1", v)
	}
	if got.Err() != nil {
		t.Errorf("call context ended with the caller's: %v", got.Err())
	}
	if d, ok := got.Deadline(); !ok || time.Until(d) > time.Minute {
		t.Errorf("call context deadline = %v, %v; want within CallTimeout", d, ok)
	}
}

// TestFailedCallsStayOutOfTheEstimate: the escape wait follows the latency
// of calls that succeeded only.
func TestFailedCallsStayOutOfTheEstimate(t *testing.T) {
	c := newCalls(t)
	b := New(c.call, Options[item]{MinWait: noEscape})
	rtt := func() time.Duration {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.rtt
	}
	add(t, b, item{name: "fails"})
	c.next(t).release <- errors.New("unavailable")
	waitfor.True(t, "the failed call to end", func() bool { return b.Stats().InFlight == 0 })
	if got := rtt(); got != 0 {
		t.Errorf("latency estimate after a failed call = %s, want 0", got)
	}
	add(t, b, item{name: "succeeds"})
	h := c.next(t)
	time.Sleep(time.Millisecond) // the call lasts at least this long
	h.release <- nil
	waitfor.True(t, "the call to end", func() bool { return b.Stats().InFlight == 0 })
	if got := rtt(); got < time.Millisecond/8 {
		t.Errorf("latency estimate after a 1ms call = %s, want at least an eighth of it", got)
	}
}

func TestEscapeWait(t *testing.T) {
	const maxWait = 100 * time.Millisecond
	tests := []struct {
		minWait, rtt, want time.Duration
	}{
		{minWait: time.Millisecond, rtt: 0, want: time.Millisecond},
		{minWait: time.Millisecond, rtt: 5 * time.Millisecond, want: 10 * time.Millisecond},
		{minWait: 20 * time.Millisecond, rtt: 5 * time.Millisecond, want: 20 * time.Millisecond},
		{minWait: time.Millisecond, rtt: 3 * time.Second, want: maxWait},
		{minWait: time.Second, rtt: 3 * time.Second, want: time.Second},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.minWait, "/", tc.rtt), func(t *testing.T) {
			if got := escapeWait(tc.minWait, maxWait, tc.rtt); got != tc.want {
				t.Errorf("escapeWait(%s, %s, %s) = %s, want %s", tc.minWait, maxWait, tc.rtt, got, tc.want)
			}
		})
	}
}
