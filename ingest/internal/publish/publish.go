// Package publish is ingest's one long-lived Pub/Sub publisher: it batches
// the events of many requests into few Publish calls, returns from Publish
// only once Pub/Sub has confirmed the message, and never sends a message
// whose caller has stopped waiting for it.
//
// Why not the client library's pubsub.Publisher: it cannot take a message
// back. A message handed to it is sent whenever a Publish call is free, so
// while Pub/Sub does not answer, the messages of requests already answered
// 503 pile up in its bundler and are published later — duplicates once
// Segment retries, and memory without bound in a long outage. Here a
// message leaves the queue for a Publish call or is withdrawn when its
// caller gives up (ErrWithdrawn: certainly not published), and the bytes
// held are bounded (ErrFull: refused at once). Measured against the
// library's publisher in the same run (docs/benchmarks.md), this one is as
// fast without ordering keys and much faster with them.
//
// Ordering keys (optional): the library's publisher bundles per ordering
// key, so with a key per person every event becomes its own Publish call.
// Pub/Sub itself keeps order per key within and across Publish requests as
// long as a key's requests do not overlap; this batcher puts many keys into
// one request and never has two requests of the same key in flight.
package publish

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/googleapis/gax-go/v2"

	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/gcpclient"
)

// Options tune the publisher. Zero values take the defaults noted.
type Options struct {
	// DisableOrdering publishes without ordering keys.
	DisableOrdering bool
	// DelayThreshold is the least a message waits behind a partial batch
	// in flight before another call is opened for it (default 1ms). A
	// message never waits when no partial batch is in flight, so this adds
	// nothing to an idle publisher's latency; under load the wait is
	// max(DelayThreshold, twice the recent Publish latency, at most
	// 100ms), so batches
	// fill while the previous call runs instead of leaving every
	// DelayThreshold as many small calls.
	DelayThreshold time.Duration
	// CountThreshold is the most messages in one Publish call (default 500;
	// Pub/Sub allows 1,000).
	CountThreshold int
	// ByteThreshold is the most bytes in one Publish call (default 5 MB;
	// Pub/Sub allows 10 MB).
	ByteThreshold int
	// MaxInFlight is how many Publish calls may run at once (default 8).
	// Full batches use all of them; partial batches take turns (see
	// DelayThreshold).
	MaxInFlight int
	// Timeout bounds one publish (default 10s): past it the request answers
	// 503 and Segment retries.
	Timeout time.Duration
	// MaxBytes bounds the bytes of the messages held, queued or in a
	// Publish call (default 64 MiB). Past it Publish fails at once with
	// ErrFull, so a stalled Pub/Sub costs bounded memory and fast 503s.
	MaxBytes int
}

// rpc sends one Publish request, with the client library's own retries of
// transient errors. Safe for concurrent use.
type rpc interface {
	Publish(ctx context.Context, req *pubsubpb.PublishRequest, opts ...gax.CallOption) (*pubsubpb.PublishResponse, error)
}

// pending is one message waiting for its batch's result.
type pending struct {
	msg  *pubsubpb.PubsubMessage
	size int
	done chan error
	// id is Pub/Sub's id for the message, set before done is told of success.
	id string
	// sent is set, under the publisher's lock, when the message leaves the
	// queue for a Publish call; withdrawn when its caller gave up before
	// that (it is then skipped, never sent).
	sent, withdrawn bool
}

// Publisher publishes envelopes to one topic. Safe for concurrent use.
type Publisher struct {
	rpc   rpc
	topic string
	opts  Options

	mu       sync.Mutex
	queue    []*pending
	bytes    int             // of the messages queued and not withdrawn
	queued   int             // messages queued and not withdrawn
	held     int             // bytes queued or in a Publish call (bounded by MaxBytes)
	busyKeys map[string]bool // ordering keys with a request in flight
	inFlight int
	partials int           // partial batches in flight
	rtt      time.Duration // moving average of Publish call durations
	timer    *time.Timer
	stopped  bool
	idle     *sync.Cond // signalled when a request ends
	enqueued int        // messages ever queued (for tests)
	calls    int        // Publish calls started
	sent     int        // messages in them
}

// Stats are counts since the publisher started.
type Stats struct {
	Calls    int // Publish calls started
	Messages int // messages in those calls
}

// Stats returns the publisher's counts.
func (p *Publisher) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Calls: p.calls, Messages: p.sent}
}

// New returns a publisher for topic (a short name or a full resource name)
// of project, publishing through client's v2 topic admin client.
func New(client *pubsub.Client, project, topic string, opts Options) *Publisher {
	return newPublisher(client.TopicAdminClient, gcpclient.TopicName(project, topic), opts)
}

func newPublisher(r rpc, topic string, opts Options) *Publisher {
	if opts.DelayThreshold <= 0 {
		opts.DelayThreshold = time.Millisecond
	}
	if opts.CountThreshold <= 0 || opts.CountThreshold > 1000 {
		opts.CountThreshold = 500
	}
	if opts.ByteThreshold <= 0 || opts.ByteThreshold > 9<<20 {
		opts.ByteThreshold = 5 << 20
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 8
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 64 << 20
	}
	p := &Publisher{rpc: r, topic: topic, opts: opts, busyKeys: map[string]bool{}}
	p.idle = sync.NewCond(&p.mu)
	return p
}

// Errors of Publish. Each means the message was not published and never
// will be by this publisher; any other error means the outcome is unknown
// (the message was in a Publish call that did not answer in time, or
// failed).
var (
	// ErrStopped is returned by Publish after Stop.
	ErrStopped = errors.New("publisher stopped")
	// ErrFull: the publisher already holds MaxBytes; the message was
	// refused.
	ErrFull = errors.New("publisher full: too many bytes waiting for Pub/Sub")
	// ErrWithdrawn: the wait ended (ctx or the timeout) before the message
	// was in a Publish call; it was taken out of the queue.
	ErrWithdrawn = errors.New("not sent before the wait ended; withdrawn")
)

// Publish sends msg and waits for Pub/Sub's confirmation, ctx's end, or the
// publish timeout, and returns the id Pub/Sub gave the message. When the
// wait ends early, a message still queued is withdrawn (ErrWithdrawn); one
// already in a Publish call may still be published, and Segment's retry
// then makes a duplicate, which deliver ignores.
func (p *Publisher) Publish(ctx context.Context, msg *envelope.Encoded) (string, error) {
	m := &pubsubpb.PubsubMessage{Data: msg.Data, Attributes: msg.Attributes}
	if !p.opts.DisableOrdering {
		m.OrderingKey = msg.OrderingKey
	}
	size := len(m.Data) + len(m.OrderingKey) + 64
	for k, v := range m.Attributes {
		size += len(k) + len(v)
	}
	pd := &pending{msg: m, size: size, done: make(chan error, 1)}
	id := msg.Attributes[envelope.AttrMessageID]
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("publish %s: %w (%w)", id, ErrWithdrawn, err)
	}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return "", ErrStopped
	}
	if p.held+size > p.opts.MaxBytes {
		p.mu.Unlock()
		return "", fmt.Errorf("publish %s: %w", id, ErrFull)
	}
	p.queue = append(p.queue, pd)
	p.bytes += size
	p.queued++
	p.held += size
	p.enqueued++
	p.dispatchLocked(false)
	p.armLocked()
	p.mu.Unlock()

	t := time.NewTimer(p.opts.Timeout)
	defer t.Stop()
	var why error
	select {
	case err := <-pd.done:
		if err != nil {
			return "", fmt.Errorf("publish %s: %w", id, err)
		}
		return pd.id, nil
	case <-ctx.Done():
		why = ctx.Err()
	case <-t.C:
		why = fmt.Errorf("no confirmation within %s", p.opts.Timeout)
	}
	if p.withdraw(pd) {
		return "", fmt.Errorf("publish %s: %w (%w)", id, ErrWithdrawn, why)
	}
	return "", fmt.Errorf("publish %s: in a Publish call, unconfirmed: %w", id, why)
}

// withdraw takes pd out of the queue unless it is already in a Publish
// call, and reports whether it did. A withdrawn message stays in the
// queue's slice, skipped, until the next batch is taken.
func (p *Publisher) withdraw(pd *pending) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pd.sent {
		return false
	}
	pd.withdrawn = true
	pd.msg = nil // its bytes are free now
	p.bytes -= pd.size
	p.queued--
	p.held -= pd.size
	// While every call is stuck nothing takes from the queue: drop the
	// withdrawn entries once they are most of it, so that a long outage
	// does not grow the slice.
	if dead := len(p.queue) - p.queued; dead > 64 && dead > p.queued {
		live := p.queue[:0]
		for _, q := range p.queue {
			if !q.withdrawn {
				live = append(live, q)
			}
		}
		clear(p.queue[len(live):])
		p.queue = live
	}
	return true
}

// maxEscapeWait bounds how long queued messages wait behind a slow partial
// batch when Publish calls are slow (a degraded Pub/Sub).
const maxEscapeWait = 100 * time.Millisecond

// armLocked starts the timer that opens another call for queued messages
// when the partial batch ahead of them is slow.
func (p *Publisher) armLocked() {
	if p.queued == 0 || p.timer != nil || p.stopped {
		return
	}
	p.timer = time.AfterFunc(escapeWait(p.opts.DelayThreshold, p.rtt), p.flushTimer)
}

// escapeWait is how long queued messages wait behind a partial batch in
// flight, given the delay option and the recent Publish latency: long enough
// for the call to return as usual, never less than delay, and at most
// maxEscapeWait unless delay asks for more.
func escapeWait(delay, rtt time.Duration) time.Duration {
	return max(delay, min(2*rtt, maxEscapeWait))
}

func (p *Publisher) flushTimer() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.timer = nil
	p.dispatchLocked(true)
	// What is left waits for a key's request or a free slot; look again
	// after another delay.
	p.armLocked()
}

// dispatchLocked starts requests while a slot is free and a batch is due: a
// full batch at once; a partial one when no other partial batch is in
// flight, or once (escape) when the timer found messages waiting too long.
// So under load a partial batch fills while the one before it runs: the
// number of calls follows the Publish latency, not the arrival rate.
// Messages whose key has a request in flight stay queued, in order, behind
// it.
func (p *Publisher) dispatchLocked(escape bool) {
	for p.inFlight < p.opts.MaxInFlight && p.queued > 0 {
		full := p.queued >= p.opts.CountThreshold || p.bytes >= p.opts.ByteThreshold
		if !full && p.partials > 0 && !escape {
			return
		}
		batch, keys := p.takeLocked()
		if len(batch) == 0 {
			return // every queued key is busy
		}
		partial := !full
		if partial {
			p.partials++
			escape = false
		}
		p.inFlight++
		p.calls++
		p.sent += len(batch)
		go p.send(batch, keys, partial)
	}
}

// takeLocked removes the next batch from the queue: messages in arrival
// order, skipping (and keeping) those of keys already in flight, so a key is
// never in two requests at once.
func (p *Publisher) takeLocked() ([]*pending, []string) {
	var batch []*pending
	var keys []string
	rest := p.queue[:0]
	size := 0
	var blocked map[string]bool
	for _, pd := range p.queue {
		if pd.withdrawn {
			continue
		}
		k := pd.msg.OrderingKey
		if len(batch) >= p.opts.CountThreshold || size+pd.size > p.opts.ByteThreshold && len(batch) > 0 ||
			(k != "" && (p.busyKeys[k] || blocked[k])) {
			if k != "" {
				if blocked == nil {
					blocked = map[string]bool{}
				}
				blocked[k] = true // later messages of this key stay behind it
			}
			rest = append(rest, pd)
			continue
		}
		pd.sent = true
		batch = append(batch, pd)
		size += pd.size
		if k != "" && !p.busyKeys[k] {
			p.busyKeys[k] = true
			keys = append(keys, k)
		}
	}
	for i := len(rest); i < len(p.queue); i++ {
		p.queue[i] = nil
	}
	p.queue = rest
	p.bytes -= size
	p.queued -= len(batch)
	return batch, keys
}

// send publishes one batch and tells each of its messages the result.
func (p *Publisher) send(batch []*pending, keys []string, partial bool) {
	msgs := make([]*pubsubpb.PubsubMessage, len(batch))
	held := 0
	for i, pd := range batch {
		msgs[i] = pd.msg
		held += pd.size
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), p.opts.Timeout)
	resp, err := p.rpc.Publish(ctx, &pubsubpb.PublishRequest{Topic: p.topic, Messages: msgs})
	cancel()
	took := time.Since(start)
	if err == nil && len(resp.GetMessageIds()) != len(batch) {
		err = fmt.Errorf("pubsub answered %d message ids for %d messages", len(resp.GetMessageIds()), len(batch))
	}
	for i, pd := range batch {
		if err == nil {
			pd.id = resp.MessageIds[i]
		}
		pd.done <- err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range keys {
		delete(p.busyKeys, k)
	}
	p.held -= held
	p.inFlight--
	if partial {
		p.partials--
	}
	if err == nil {
		p.rtt += (took - p.rtt) / 8
	}
	p.idle.Broadcast()
	// Under load the queue filled while this request ran: send it now
	// rather than wait for the delay.
	p.dispatchLocked(false)
	p.armLocked()
}

// Stop sends what is queued, waits for every request in flight, and stops
// the publisher; later Publish calls fail with ErrStopped.
func (p *Publisher) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	for p.queued > 0 || p.inFlight > 0 {
		p.dispatchLocked(true)
		p.idle.Wait()
	}
	p.queue = nil
}
