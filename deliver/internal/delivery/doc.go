// Package delivery is deliver's processing of one Pub/Sub message, the same
// for the three intakes (pull, push, Eventarc), which all call
// Processor.Process and turn its Decision into Pub/Sub's ack or nack.
//
// # Stages
//
// Process runs decode → guard → dedupe → plan → apply → outcome, each with
// one reason to change:
//
//   - decode reads the envelope (package envelope);
//   - guard makes the event the only copy of itself running here and waits
//     for its account's turn (copies and scheduler);
//   - dedupe claims the event's record, so that it is the only copy running
//     on any instance, or skips what was already completed (the completions
//     store, dedupe.Store.Claim);
//   - plan loads the account's configuration and decides what the event
//     means in Startdeliver (package plan: pure);
//   - apply carries the plan out through Startdeliver (applier), finding
//     before creating and creating a new person once;
//   - outcome is the sole writer of what a delivery leaves behind: the
//     completion record of a finished event, and the dead-letter message
//     and its attributes (outcome).
//
// # Outcomes (docs/api.md §2)
//
//   - delivered, duplicate, skipped → ack. Skipped covers events with no
//     effect by design: alias, identify and group without segmentApp, and
//     anonymous events (class anonymous: neither a userId nor any other value
//     to match on).
//   - permanent failure (failure.IsPermanent: Startdeliver 400/401/403/404/
//     422, an answer that breaks the API's shape, a config that cannot
//     apply, an override field absent from an event that has a userId, a
//     disabled account, an unreadable message) → published to the
//     dead-letter topic with error and errorClass, then ack. If that publish
//     fails, nack: nothing is dropped.
//   - anything else, unknown errors included → nack, after the in-process
//     retries below. A panic is recovered, logged with its stack, and
//     nacked.
//
// # Scheduling: waiting is not failing
//
// An event that cannot run yet waits in process; it is never nacked for
// being busy, since every nack spends one of the subscription's delivery
// attempts (as few as 5). While it waits, its lease is extended by the
// Pub/Sub client (pull) or its push request stays open (push). The rule:
//
//   - at most PerAccount events of one account run at once; the others of
//     that account queue first come, first served. Accounts never share
//     slots, so one account's burst does not delay another's held events;
//   - how many messages are held at all is the intake's flow control
//     (PULL_MAX_OUTSTANDING, default 2,048, and 64 MiB in pull mode; the
//     push subscription's own flow control in push mode): past it Pub/Sub
//     keeps the backlog. It is one pool for every account, filled in the
//     order Pub/Sub hands messages over, and no per-account cap can be put
//     on it from here: refusing a message that is already held either
//     spends one of its delivery attempts (a nack) or loses its place in
//     its person's order (an ack and a new publish). So the pool is sized
//     well above what one account runs at once (ACCOUNT_CONCURRENCY): a
//     held message costs its bytes and, with ordering keys, a goroutine
//     only for the one message per person that has reached the scheduler.
//     Behind one account's burst, another account's first event is pulled
//     once fewer than a pool's worth of the burst is ahead of it, and then
//     runs at once in its own lane. In the burst test (1,000 events of one
//     account, pull mode) it took 5.6–6.2 s with a pool of 256 or 512 and
//     0.16–0.22 s with 1,024 or 2,048, against 0.11–0.24 s alone. A burst
//     larger than the pool still delays other accounts' first events. In
//     push mode the subscription decides what it pushes first (the
//     emulator pushes two requests at a time, in its own order);
//   - an event that waits for another event's creation of the same new
//     person, or for another instance's claim on it, gives its slot back
//     while it waits, and takes one again ahead of events not yet started;
//   - a second copy of an event already running here waits for it, holding
//     no slot, and then finds its completion record; a copy running on
//     another instance (its claim is fresh) is waited for the same way,
//     polling the claim with the slot given back, and its budget starts
//     only once this copy holds the claim;
//   - the wait ends only when the intake's context does: at shutdown, or in
//     push mode TurnWait before the ack deadline. Such an event has not
//     started: it is nacked, which spends one of its delivery attempts (the
//     price of a large pool: more messages may be waiting at a SIGTERM).
//
// # Retry policy
//
// One policy, for every failure that may pass:
//
//   - Each delivery has a time budget (Budget, DELIVERY_BUDGET, default 5s)
//     that starts when it gets its turn and fits inside the subscription's
//     ack deadline and inside the shutdown grace with the outcome's writes
//     (FinishTimeout). Nothing a delivery does outlives it.
//   - Within the budget, a failed Startdeliver call is retried in process
//     (startdeliver.Retry): a retry.Backoff pause (jittered, exponential), or
//     the Retry-After Startdeliver asked for when longer, as long as the
//     pause and another attempt fit in what is left of the budget. A
//     Retry-After longer than that nacks at once instead of sleeping. The
//     plan is not rerun around the client: one layer retries.
//   - Past the budget the message is nacked, and the subscription's retry
//     policy spaces its redeliveries.
//   - The outcome's writes (completion record, dead letter) have their own
//     short bound (FinishTimeout), detached from the budget: an event whose
//     effects are done is recorded even when its budget ran out.
//
// # Shutdown
//
// Process's context only bounds waiting for a turn. Once an event has its
// turn it runs on a context of its own, bounded by its budget, so that the
// intake stopping (the Pub/Sub client cancels callback contexts when
// receiving stops) never cuts a call in flight: it finishes within the
// budget and its outcome is written; events still waiting are nacked.
package delivery
