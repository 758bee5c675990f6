package dedupe

import (
	"time"

	"github.com/startdeliver/segment-destination/shared/batch"
)

const (
	// maxBatch is the most documents in one read call.
	maxBatch = 100
	// maxInFlight is how many read calls may run at once. Full batches use
	// all of them; partial batches take turns.
	maxInFlight = 4
	// callTimeout bounds one Firestore call, so that a stuck read gives its
	// slot back. Callers wait less when their own context says so.
	callTimeout = 30 * time.Second
	// minEscapeWait and maxEscapeWait bound how long queued ops wait behind
	// a partial batch in flight before another call is opened for them:
	// twice the recent call latency, within these bounds.
	minEscapeWait = time.Millisecond
	maxEscapeWait = 100 * time.Millisecond
)

// op is one Done call's read of a completion document, waiting for the
// answer of the call that carries it.
type op struct {
	key string
	// done receives the op's result once. Buffered, so a call never waits
	// for a caller who has stopped waiting.
	done chan result
}

// result is what a call tells one op.
type result struct {
	completed bool // for a read: the document records a live completion
	err       error
}

// readOptions are the batcher settings of Done's reads: self-clocked (see
// shared/batch), so a lone check goes at once and the checks that arrive
// while a read is in flight go together when it returns.
func readOptions() batch.Options[*op] {
	return batch.Options[*op]{
		MaxItems:    maxBatch,
		MaxCalls:    maxInFlight,
		MinWait:     minEscapeWait,
		MaxWait:     maxEscapeWait,
		CallTimeout: callTimeout,
	}
}
