package dedupe

import (
	"context"
	"slices"
	"sync"
	"time"
)

const (
	// maxBatch is the most documents in one read call or records in one
	// transaction (Firestore allows 500 writes in a commit).
	maxBatch = 100
	// maxInFlight is how many calls of each kind may run at once. Full
	// batches use all of them; partial batches take turns (see batcher).
	maxInFlight = 4
	// callTimeout bounds one call, so that a stuck call gives its slot back.
	// Callers wait less when their own context says so.
	callTimeout = 30 * time.Second
	// minEscapeWait and maxEscapeWait bound how long queued ops wait behind
	// a partial batch in flight before another call is opened for them:
	// twice the recent call latency, within these bounds.
	minEscapeWait = time.Millisecond
	maxEscapeWait = 100 * time.Millisecond
)

// op is one caller's read or write of a completion document, waiting for
// the answer of the call that carries it.
type op struct {
	// ctx is the caller's. A call runs under its first op's context values
	// (its trace) but not its cancellation, which ends only that caller's
	// wait.
	ctx  context.Context
	key  string
	data map[string]any // the record, for a write
	// done receives the op's result once. Buffered, so a call never waits
	// for a caller who has stopped waiting.
	done chan result
}

func newOp(ctx context.Context, key string, data map[string]any) *op {
	return &op{ctx: ctx, key: key, data: data, done: make(chan result, 1)}
}

// result is what a call tells one op.
type result struct {
	completed bool // for a read: the document records a live completion
	err       error
}

// batcher runs the ops of concurrent callers in few calls, self-clocked the
// way ingest's publisher batches Pub/Sub messages: an op goes at once when
// no partial batch is in flight, so an idle store adds no latency; while one
// is in flight, later ops queue and go together when it returns, or at once
// when a full batch has queued. So under load the number of calls follows
// the call latency, not the arrival rate. An escape timer opens another call
// for ops that have waited long behind a slow one. Safe for concurrent use.
type batcher struct {
	max int // most ops in one call
	// call runs one batch and sends every op its result; its error, when
	// the whole call failed, keeps a failed call's latency out of the
	// estimate. It must return within ctx.
	call func(ctx context.Context, ops []*op) error
	// minWait and maxWait bound the escape wait (tests lengthen them).
	minWait, maxWait time.Duration

	mu       sync.Mutex
	queue    []*op
	inFlight int
	partials int           // partial batches in flight
	rtt      time.Duration // moving average of successful call durations
	timer    *time.Timer
	timerGen int // invalidates a timer that fired after it was stopped
}

func newBatcher(max int, call func(context.Context, []*op) error) *batcher {
	return &batcher{max: max, call: call, minWait: minEscapeWait, maxWait: maxEscapeWait}
}

// add queues o; its result arrives on o.done.
func (b *batcher) add(o *op) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queue = append(b.queue, o)
	b.dispatchLocked(false)
	b.armLocked()
}

// drop takes o out of the queue if no call has taken it yet, for a caller
// that stopped waiting.
func (b *batcher) drop(o *op) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i := slices.Index(b.queue, o); i >= 0 {
		b.queue = slices.Delete(b.queue, i, i+1)
		b.armLocked()
	}
}

// queued is how many ops wait for a call (for tests).
func (b *batcher) queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// dispatchLocked starts calls while a slot is free and a batch is due: a
// full one at once; a partial one when no other partial batch is in flight,
// or once (escape) when the timer found ops waiting too long.
func (b *batcher) dispatchLocked(escape bool) {
	for b.inFlight < maxInFlight && len(b.queue) > 0 {
		full := len(b.queue) >= b.max
		if !full && b.partials > 0 && !escape {
			return
		}
		n := min(len(b.queue), b.max)
		ops := slices.Clone(b.queue[:n])
		b.queue = slices.Delete(b.queue, 0, n)
		if !full {
			b.partials++
			escape = false
		}
		b.inFlight++
		go b.run(ops, !full)
	}
}

// armLocked starts the escape timer while ops wait, and stops it when none
// do, so that the wait counts from the oldest op still queued.
func (b *batcher) armLocked() {
	if len(b.queue) == 0 {
		if b.timer != nil {
			b.timer.Stop()
			b.timer = nil
			b.timerGen++
		}
		return
	}
	if b.timer != nil {
		return
	}
	gen := b.timerGen
	wait := max(b.minWait, min(2*b.rtt, b.maxWait))
	b.timer = time.AfterFunc(wait, func() { b.escape(gen) })
}

func (b *batcher) escape(gen int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if gen != b.timerGen {
		return // stopped after it fired
	}
	b.timer = nil
	b.timerGen++
	b.dispatchLocked(true)
	// What is left waits for a free slot; look again after another wait.
	b.armLocked()
}

// run makes one call and, when it returns, sends what queued meanwhile.
func (b *batcher) run(ops []*op, partial bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ops[0].ctx), callTimeout)
	start := time.Now()
	err := b.call(ctx, ops)
	took := time.Since(start)
	cancel()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inFlight--
	if partial {
		b.partials--
	}
	if err == nil {
		b.rtt += (took - b.rtt) / 8
	}
	b.dispatchLocked(false)
	b.armLocked()
}
