// Package publish is ingest's one long-lived Pub/Sub publisher: it batches
// the events of many requests into few Publish calls, keeps each person's
// events in order, and returns from Publish only once Pub/Sub has confirmed
// the message.
//
// Why not pubsub.Publisher with EnableMessageOrdering: that publisher
// bundles per ordering key, so with a key per person (thousands of keys,
// one event each at a time) every event becomes its own Publish call and
// throughput falls to a third. Pub/Sub itself keeps order per key within
// and across Publish requests as long as a key's requests do not overlap;
// this batcher puts many keys into one request and never has two requests
// of the same key in flight, which is the same guarantee at batch speed.
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
}

// Publisher publishes envelopes to one topic. Safe for concurrent use.
type Publisher struct {
	rpc   rpc
	topic string
	opts  Options

	mu       sync.Mutex
	queue    []*pending
	bytes    int
	busyKeys map[string]bool // ordering keys with a request in flight
	inFlight int
	partials int           // partial batches in flight
	rtt      time.Duration // moving average of Publish call durations
	timer    *time.Timer
	stopped  bool
	idle     *sync.Cond // signalled when a request ends
	enqueued int        // messages ever queued (for tests)
}

// New returns a publisher for topic (a short name or a full resource name)
// of project, publishing through client's v2 topic admin client.
func New(client *pubsub.Client, project, topic string, opts Options) *Publisher {
	return newPublisher(client.TopicAdminClient, topicName(project, topic), opts)
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
	p := &Publisher{rpc: r, topic: topic, opts: opts, busyKeys: map[string]bool{}}
	p.idle = sync.NewCond(&p.mu)
	return p
}

func topicName(project, topic string) string {
	if len(topic) > 9 && topic[:9] == "projects/" {
		return topic
	}
	return "projects/" + project + "/topics/" + topic
}

// ErrStopped is returned by Publish after Stop.
var ErrStopped = errors.New("publisher stopped")

// Publish sends msg and waits for Pub/Sub's confirmation, ctx's end, or the
// publish timeout, and returns the id Pub/Sub gave the message. A message
// whose wait ended early may still be published: Segment's retry then makes
// a duplicate, which deliver ignores.
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
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return "", ErrStopped
	}
	p.queue = append(p.queue, pd)
	p.bytes += size
	p.enqueued++
	p.dispatchLocked(false)
	p.armLocked()
	p.mu.Unlock()

	t := time.NewTimer(p.opts.Timeout)
	defer t.Stop()
	select {
	case err := <-pd.done:
		if err != nil {
			return "", fmt.Errorf("publish %s: %w", msg.Attributes[envelope.AttrMessageID], err)
		}
		return pd.id, nil
	case <-ctx.Done():
		return "", fmt.Errorf("publish %s: %w", msg.Attributes[envelope.AttrMessageID], ctx.Err())
	case <-t.C:
		return "", fmt.Errorf("publish %s: no confirmation within %s", msg.Attributes[envelope.AttrMessageID], p.opts.Timeout)
	}
}

// maxEscapeWait bounds how long queued messages wait behind a slow partial
// batch when Publish calls are slow (a degraded Pub/Sub).
const maxEscapeWait = 100 * time.Millisecond

// armLocked starts the timer that opens another call for queued messages
// when the partial batch ahead of them is slow.
func (p *Publisher) armLocked() {
	if len(p.queue) == 0 || p.timer != nil || p.stopped {
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
	for p.inFlight < p.opts.MaxInFlight && len(p.queue) > 0 {
		full := len(p.queue) >= p.opts.CountThreshold || p.bytes >= p.opts.ByteThreshold
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
	blocked := map[string]bool{}
	for _, pd := range p.queue {
		k := pd.msg.OrderingKey
		if len(batch) >= p.opts.CountThreshold || size+pd.size > p.opts.ByteThreshold && len(batch) > 0 ||
			(k != "" && (p.busyKeys[k] || blocked[k])) {
			if k != "" {
				blocked[k] = true // later messages of this key stay behind it
			}
			rest = append(rest, pd)
			continue
		}
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
	return batch, keys
}

// send publishes one batch and tells each of its messages the result.
func (p *Publisher) send(batch []*pending, keys []string, partial bool) {
	msgs := make([]*pubsubpb.PubsubMessage, len(batch))
	for i, pd := range batch {
		msgs[i] = pd.msg
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
	for len(p.queue) > 0 || p.inFlight > 0 {
		p.dispatchLocked(true)
		p.idle.Wait()
	}
}
