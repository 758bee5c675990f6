package dedupe

import (
	"time"

	"github.com/startdeliver/segment-destination/shared/batch"
)

const (
	// maxBatch is the most claims in one call: the BulkWriter sends at
	// most 20 writes a BatchWrite call, so a batch is one call.
	maxBatch = 20
	// maxInFlight is how many claim calls may run at once. Full batches
	// use all of them; partial batches take turns.
	maxInFlight = 4
	// callTimeout bounds one Firestore call, so that a stuck call gives its
	// slot back. Callers wait less when their own context says so.
	callTimeout = 30 * time.Second
	// minEscapeWait and maxEscapeWait bound how long queued ops wait behind
	// a partial batch in flight before another call is opened for them:
	// twice the recent call latency, within these bounds.
	minEscapeWait = time.Millisecond
	maxEscapeWait = 100 * time.Millisecond
)

// op is one Claim call's claim of a record, waiting for the answer of the
// call that carries it.
type op struct {
	key string
	rec *Record
	// done receives the op's result once. Buffered, so a call never waits
	// for a caller who has stopped waiting.
	done chan result
}

// result is what a call tells one op.
type result struct {
	claim *Claim
	err   error
}

// claimOptions are the batcher settings of Claim's calls: self-clocked
// (see shared/batch), so a lone claim goes at once and the claims that
// arrive while a call is in flight go together when it returns. The
// document is the key: one document is never in two calls at once.
func claimOptions() batch.Options[*op] {
	return batch.Options[*op]{
		MaxItems:    maxBatch,
		MaxCalls:    maxInFlight,
		MinWait:     minEscapeWait,
		MaxWait:     maxEscapeWait,
		CallTimeout: callTimeout,
		Key:         func(o *op) string { return o.key },
	}
}
