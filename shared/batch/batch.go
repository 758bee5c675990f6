// Package batch runs the items of many concurrent callers in few calls
// (Pub/Sub Publish requests, Firestore BatchGetDocuments), self-clocked so
// that an idle service adds no latency and a busy one makes as few calls as
// its latency allows.
//
// The rule: an item goes at once when no partial batch is in flight. While
// one is, later items queue and go together when it returns, or at once
// when a full batch has queued (full in count or in bytes). So under load
// the number of calls follows the call latency, not the arrival rate, and
// nothing waits for a timer to fill a batch. An escape timer opens another
// call for items that have waited behind a slow partial batch for twice the
// recent call latency (within MinWait and MaxWait).
//
// Besides, a batcher can bound the bytes it holds, queued or in calls
// (MaxHeld: Add fails at once with ErrFull), take an item back that no call
// has taken yet (Withdraw: it is certainly never sent), and keep the items
// of one ordering key in order and out of concurrent calls (Key).
//
// Why not google.golang.org/api/support/bundler (which the Pub/Sub
// client's own publisher uses): its bundles close on a count, a byte
// threshold or a DelayThreshold timer started by the first item, so a lone
// item waits for the timer, or, with a short timer, every call carries what
// arrived within it whatever the latency; it cannot take an item back once
// added, so the items of callers who gave up are still handled, late (in an
// outage, the messages of requests long since answered 503); and it has no
// notion of keys that must not be in two calls at once (the Pub/Sub client
// runs one bundler per ordering key, so with a key per person nearly every
// message is its own call).
package batch

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Errors of Add.
var (
	// ErrStopped: Stop was called; the item was not taken.
	ErrStopped = errors.New("batcher stopped")
	// ErrFull: the batcher already holds MaxHeld bytes; the item was not
	// taken.
	ErrFull = errors.New("batcher full")
)

// Options shape a batcher. Zero values take the defaults noted.
type Options[T any] struct {
	// MaxItems is the most items in one call (default 100).
	MaxItems int
	// Size is an item's size in bytes, for MaxBytes and MaxHeld; without
	// it every item counts 0 bytes. It is called once, in Add.
	Size func(T) int
	// MaxBytes is the most bytes in one call (default: no bound). An item
	// larger than MaxBytes goes in a call of its own.
	MaxBytes int
	// MaxHeld bounds the bytes of the items held, queued or in a call
	// (default: no bound): past it Add fails at once with ErrFull, so a
	// stalled backend costs bounded memory and fast refusals.
	MaxHeld int
	// Key, when set, is an item's ordering key ("" for none; called once,
	// in Add). Items of one key go in the order they were added, together
	// in one call as far as the bounds allow, and never while another call
	// carrying that key runs: so the backend never sees two overlapping
	// requests of one key. Items of other keys go past them.
	Key func(T) string
	// MaxCalls is how many calls may run at once (default 4). Full batches
	// use all of them; partial batches take turns.
	MaxCalls int
	// MinWait and MaxWait bound the escape wait: how long queued items wait
	// behind a partial batch in flight before another call is opened for
	// them. It is twice the recent latency of successful calls, at least
	// MinWait (default 1ms) and at most MaxWait (default 100ms) unless
	// MinWait is more.
	MinWait, MaxWait time.Duration
	// CallTimeout bounds one call (default 30s), so a stuck call gives its
	// slot back.
	CallTimeout time.Duration
}

// Call runs one batch and tells each of its items the result: the batcher
// does not. ctx carries the values (a trace) of the context the batch's
// first item was added with, not its cancellation, and ends after
// CallTimeout; Call must return by then. Its error, when the whole call
// failed, keeps the failed call's latency out of the escape wait. Calls run
// concurrently, each on its own goroutine.
type Call[T any] func(ctx context.Context, batch []T) error

// Ticket is an item's place in a batcher, for Withdraw.
type Ticket[T any] struct {
	v    T
	ctx  context.Context
	size int
	key  string
	// sent is set, under the batcher's lock, when the item leaves the
	// queue for a call; withdrawn when it was taken back before that (it
	// then stays in the queue's slice, skipped, until the next take or a
	// compaction).
	sent, withdrawn bool
}

// Stats is a batcher's state, for metrics, benchmarks and tests: counts
// since it started, and what it holds now.
type Stats struct {
	Added    int64 // items ever added
	Calls    int64 // calls started
	Sent     int64 // items in those calls
	Queued   int   // items waiting for a call
	InFlight int   // calls running
	Held     int   // bytes queued or in a call
}

// Batcher collects items from concurrent callers into calls. Safe for
// concurrent use.
type Batcher[T any] struct {
	call Call[T]
	opts Options[T]

	mu       sync.Mutex
	queue    []*Ticket[T]     // in arrival order, withdrawn ones included
	queued   int              // items queued and not withdrawn
	bytes    int              // of those
	held     int              // bytes queued or in a call (bounded by MaxHeld)
	busy     map[string]int64 // ordering keys in a call: the number of that call
	inFlight int
	partials int           // partial batches in flight
	rtt      time.Duration // moving average of successful call durations
	timer    *time.Timer
	timerGen int // invalidates a timer that fired after it was stopped
	stopped  bool
	idle     *sync.Cond // signalled when a call returns
	added    int64
	calls    int64
	sent     int64
}

// New returns a batcher that runs its batches with call.
func New[T any](call Call[T], opts Options[T]) *Batcher[T] {
	if opts.MaxItems <= 0 {
		opts.MaxItems = 100
	}
	if opts.MaxCalls <= 0 {
		opts.MaxCalls = 4
	}
	if opts.MinWait <= 0 {
		opts.MinWait = time.Millisecond
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = 100 * time.Millisecond
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 30 * time.Second
	}
	b := &Batcher[T]{call: call, opts: opts}
	if opts.Key != nil {
		b.busy = map[string]int64{}
	}
	b.idle = sync.NewCond(&b.mu)
	return b
}

// Add queues v, or sends it at once when no partial batch is in flight.
// ctx's values travel with v into its call (see Call); its end does not
// withdraw v: Withdraw does. The ticket is for Withdraw; the result comes
// from Call, as the caller arranged.
func (b *Batcher[T]) Add(ctx context.Context, v T) (*Ticket[T], error) {
	t := &Ticket[T]{v: v, ctx: ctx}
	if b.opts.Size != nil {
		t.size = b.opts.Size(v)
	}
	if b.opts.Key != nil {
		t.key = b.opts.Key(v)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return nil, ErrStopped
	}
	if b.opts.MaxHeld > 0 && b.held+t.size > b.opts.MaxHeld {
		return nil, ErrFull
	}
	b.queue = append(b.queue, t)
	b.queued++
	b.bytes += t.size
	b.held += t.size
	b.added++
	b.dispatchLocked(false)
	b.armLocked()
	return t, nil
}

// Withdraw takes t's item back unless a call has taken it, and reports
// whether it did: true means the item is not sent, ever. For a caller who
// stopped waiting.
func (b *Batcher[T]) Withdraw(t *Ticket[T]) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.sent {
		return false
	}
	if t.withdrawn {
		return true
	}
	t.withdrawn = true
	var zero T
	t.v, t.ctx = zero, nil // free what it holds now
	b.queued--
	b.bytes -= t.size
	b.held -= t.size
	// While every call is stuck nothing takes from the queue: drop the
	// withdrawn entries once they are most of it, so that a long outage
	// does not grow the slice.
	if dead := len(b.queue) - b.queued; dead > 64 && dead > b.queued {
		live := b.queue[:0]
		for _, q := range b.queue {
			if !q.withdrawn {
				live = append(live, q)
			}
		}
		clear(b.queue[len(live):])
		b.queue = live
	}
	b.armLocked()
	return true
}

// Stats returns the batcher's state.
func (b *Batcher[T]) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Stats{Added: b.added, Calls: b.calls, Sent: b.sent, Queued: b.queued, InFlight: b.inFlight, Held: b.held}
}

// Stop sends what is queued, without waiting for the escape timer, waits
// for every call in flight, and stops the batcher: later Adds fail with
// ErrStopped.
func (b *Batcher[T]) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	b.stopTimerLocked()
	for b.queued > 0 || b.inFlight > 0 {
		b.dispatchLocked(true)
		b.idle.Wait()
	}
	b.queue = nil
}

// dispatchLocked starts calls while a slot is free and a batch is due: a
// full batch at once; a partial one when no other partial batch is in
// flight, or once (escape) when the timer found items waiting too long.
func (b *Batcher[T]) dispatchLocked(escape bool) {
	for b.inFlight < b.opts.MaxCalls && b.queued > 0 {
		full := b.queued >= b.opts.MaxItems || b.opts.MaxBytes > 0 && b.bytes >= b.opts.MaxBytes
		if !full && b.partials > 0 && !escape {
			return
		}
		ctx, items, keys, size := b.takeLocked()
		if len(items) == 0 {
			return // every queued key is busy
		}
		partial := !full
		if partial {
			b.partials++
			escape = false
		}
		b.inFlight++
		b.calls++
		b.sent += int64(len(items))
		go b.run(ctx, items, keys, size, partial)
	}
}

// takeLocked removes the next batch from the queue: items in arrival
// order, skipping (and keeping, with every later item of their key) those
// whose key is in another call, so that a key is never in two calls at
// once; a key's items go together in one call, in order, as far as the
// bounds allow. It returns the context of the batch's first item, the
// items, the keys it marked busy, and the batch's bytes.
func (b *Batcher[T]) takeLocked() (context.Context, []T, []string, int) {
	var (
		ctx     context.Context
		items   = make([]T, 0, min(b.queued, b.opts.MaxItems))
		keys    []string
		blocked map[string]bool
		size    int
		call    = b.calls + 1 // the number of the call this batch is for
	)
	rest := b.queue[:0]
	for i, t := range b.queue {
		if t.withdrawn {
			continue
		}
		if len(items) == b.opts.MaxItems {
			// Full: the rest stays, in order (withdrawn ones are dropped by
			// the next take).
			rest = append(rest, b.queue[i:]...)
			break
		}
		k := t.key
		if b.opts.MaxBytes > 0 && size+t.size > b.opts.MaxBytes && len(items) > 0 ||
			k != "" && (blocked[k] || b.busyElsewhere(k, call)) {
			if k != "" {
				if blocked == nil {
					blocked = map[string]bool{}
				}
				blocked[k] = true // later items of this key stay behind it
			}
			rest = append(rest, t)
			continue
		}
		t.sent = true
		if ctx == nil {
			ctx = t.ctx
		}
		items = append(items, t.v)
		size += t.size
		if _, ok := b.busy[k]; k != "" && !ok {
			b.busy[k] = call
			keys = append(keys, k)
		}
	}
	clear(b.queue[len(rest):])
	b.queue = rest
	b.queued -= len(items)
	b.bytes -= size
	if ctx == nil {
		ctx = context.Background()
	}
	return ctx, items, keys, size
}

// busyElsewhere reports whether key k is in a call other than the one
// numbered call, which is being filled.
func (b *Batcher[T]) busyElsewhere(k string, call int64) bool {
	owner, ok := b.busy[k]
	return ok && owner != call
}

// run makes one call and, when it returns, sends what queued meanwhile.
func (b *Batcher[T]) run(ctx context.Context, items []T, keys []string, size int, partial bool) {
	if ctx.Done() != nil { // else it cannot end: spare the wrapper
		ctx = context.WithoutCancel(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.CallTimeout)
	start := time.Now()
	err := b.call(ctx, items)
	took := time.Since(start)
	cancel()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, k := range keys {
		delete(b.busy, k)
	}
	b.held -= size
	b.inFlight--
	if partial {
		b.partials--
	}
	if err == nil {
		b.rtt += (took - b.rtt) / 8
	}
	b.idle.Broadcast()
	// Under load the queue filled while this call ran: send it now rather
	// than wait for the timer.
	b.dispatchLocked(false)
	b.armLocked()
}

// armLocked starts the escape timer while items wait, and stops it when
// none do, so that the wait counts from the oldest item still queued.
// After Stop, Stop sends what is left.
func (b *Batcher[T]) armLocked() {
	if b.queued == 0 || b.stopped {
		b.stopTimerLocked()
		return
	}
	if b.timer != nil {
		return
	}
	gen := b.timerGen
	b.timer = time.AfterFunc(escapeWait(b.opts.MinWait, b.opts.MaxWait, b.rtt), func() { b.escape(gen) })
}

func (b *Batcher[T]) stopTimerLocked() {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
		b.timerGen++
	}
}

// escapeWait is how long queued items wait behind a partial batch in
// flight, given the recent call latency: long enough for the call to
// return as usual, never less than minWait, and at most maxWait unless
// minWait is more.
func escapeWait(minWait, maxWait, rtt time.Duration) time.Duration {
	return max(minWait, min(2*rtt, maxWait))
}

func (b *Batcher[T]) escape(gen int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if gen != b.timerGen {
		return // stopped after it fired
	}
	b.timer = nil
	b.timerGen++
	b.dispatchLocked(true)
	// What is left waits for a key's call or a free slot; look again after
	// another wait.
	b.armLocked()
}
