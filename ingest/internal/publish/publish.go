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
// one request, and a key's queued messages together, and never has two
// requests of the same key in flight.
//
// A Publish call's messages are encoded once, with protowire, in the wire
// format of a PublishRequest's messages field, into one buffer reused from
// call to call, and the request carries those bytes beside the topic; the
// server reads them as the messages field. Marshalled by protobuf-go from
// the Messages field, every message's attribute map is walked for the
// size, again for each message's length, then for the bytes, with ~25
// allocations per message: ~5% of ingest's CPU per event at 256
// connections, and BenchmarkRequestEncoding measures this way at 0.21× of
// that (docs/benchmarks.md, "Messages encoded once").
//
// The batching itself (self-clocked: a lone message goes at once, messages
// that arrive while a partial batch is in flight go together when it
// returns), the byte bound, the withdrawal and the keys are shared/batch's;
// this package makes its batches Publish calls.
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
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/startdeliver/segment-destination/shared/batch"
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
	// 100ms), so batches fill while the previous call runs instead of
	// leaving every DelayThreshold as many small calls.
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

// outgoing is one message on its way to Pub/Sub, its caller waiting on
// done for the result of the Publish call that carries it. The batcher
// holds it by value (one allocation less per message).
type outgoing struct {
	data  []byte
	attrs map[string]string
	key   string      // its ordering key, "" for none
	size  int         // of the PubsubMessage in the wire format (messageSize)
	held  int         // what it counts against the byte bounds
	done  chan answer // buffered: a call never waits for a caller
}

// fieldSize is the message's size as an element of a PublishRequest's
// messages field: what it adds to a call.
func (o outgoing) fieldSize() int {
	return protowire.SizeTag(fieldRequestMessages) + protowire.SizeBytes(o.size)
}

// answer is a Publish call's answer for one message: Pub/Sub's id for
// it, or the call's error.
type answer struct {
	id  string
	err error
}

// Publisher publishes envelopes to one topic. Safe for concurrent use.
type Publisher struct {
	rpc     rpc
	topic   string
	opts    Options
	batcher *batch.Batcher[outgoing]
}

// Stats are counts since the publisher started.
type Stats struct {
	Calls    int // Publish calls started
	Messages int // messages in those calls
}

// Stats returns the publisher's counts.
func (p *Publisher) Stats() Stats {
	st := p.batcher.Stats()
	return Stats{Calls: int(st.Calls), Messages: int(st.Sent)}
}

// New returns a publisher for topic (a short name or a full resource name)
// of project, publishing through client's v2 topic admin client.
func New(client *pubsub.Client, project, topic string, opts Options) *Publisher {
	return newPublisher(client.TopicAdminClient, gcpclient.TopicName(project, topic), opts)
}

// maxEscapeWait bounds how long queued messages wait behind a slow partial
// batch when Publish calls are slow (a degraded Pub/Sub), unless
// DelayThreshold asks for more.
const maxEscapeWait = 100 * time.Millisecond

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
	p := &Publisher{rpc: r, topic: topic, opts: opts}
	bo := batch.Options[outgoing]{
		MaxItems:    opts.CountThreshold,
		Size:        func(o outgoing) int { return o.held },
		MaxBytes:    opts.ByteThreshold,
		MaxHeld:     opts.MaxBytes,
		MaxCalls:    opts.MaxInFlight,
		MinWait:     opts.DelayThreshold,
		MaxWait:     maxEscapeWait,
		CallTimeout: opts.Timeout,
	}
	if !opts.DisableOrdering {
		bo.Key = func(o outgoing) string { return o.key }
	}
	p.batcher = batch.New(p.send, bo)
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
	s, err := p.Enqueue(ctx, msg)
	if err != nil {
		return "", err
	}
	return s.Wait(ctx)
}

// Enqueued is a message handed to the publisher, whose confirmation is
// still to be waited for.
type Enqueued struct {
	p      *Publisher
	o      outgoing
	ticket *batch.Ticket[outgoing]
	id     string    // the event's messageId, for errors
	at     time.Time // when it was enqueued: the publish timeout counts from here
}

// Enqueue hands msg to the publisher without waiting: messages of one
// ordering key are published in the order they were enqueued, so a caller
// with several events of one person (a /v1/batch) enqueues them in order
// from one goroutine and then waits for each (Wait), concurrently or one
// after the other: the publish timeout counts from Enqueue, so waiting in
// turn takes no longer than waiting at once. Errors are Publish's refusals
// (ErrStopped, ErrFull, or ctx already ended).
func (p *Publisher) Enqueue(ctx context.Context, msg *envelope.Encoded) (*Enqueued, error) {
	var key string
	if !p.opts.DisableOrdering {
		key = msg.OrderingKey
	}
	o := outgoing{data: msg.Data, attrs: msg.Attributes, key: key, done: make(chan answer, 1)}
	o.size = messageSize(o)
	// Its data, key and attributes, and 64 bytes for the rest (more than
	// the wire format's own bytes: the bounds are of memory too).
	o.held = len(o.data) + len(o.key) + 64
	for k, v := range o.attrs {
		o.held += len(k) + len(v)
	}
	at := time.Now()
	id := msg.Attributes[envelope.AttrMessageID]
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("publish %s: %w (%w)", id, ErrWithdrawn, err)
	}
	// The Publish call serves many requests: it runs under none of their
	// contexts (ctx bounds only this caller's wait).
	ticket, err := p.batcher.Add(context.Background(), o)
	switch {
	case errors.Is(err, batch.ErrStopped):
		return nil, ErrStopped
	case errors.Is(err, batch.ErrFull):
		return nil, fmt.Errorf("publish %s: %w", id, ErrFull)
	case err != nil:
		return nil, fmt.Errorf("publish %s: %w", id, err)
	}
	return &Enqueued{p: p, o: o, ticket: ticket, id: id, at: at}, nil
}

// Wait waits for the confirmation of an enqueued message, as Publish does.
// Call it once.
func (e *Enqueued) Wait(ctx context.Context) (string, error) {
	// An answer already in wins over a deadline already passed (a caller
	// waiting in turn comes to later messages late).
	select {
	case r := <-e.o.done:
		return e.result(r)
	default:
	}
	t := time.NewTimer(e.p.opts.Timeout - time.Since(e.at))
	defer t.Stop()
	var why error
	select {
	case r := <-e.o.done:
		return e.result(r)
	case <-ctx.Done():
		why = ctx.Err()
	case <-t.C:
		why = fmt.Errorf("no confirmation within %s", e.p.opts.Timeout)
	}
	if e.p.batcher.Withdraw(e.ticket) {
		return "", fmt.Errorf("publish %s: %w (%w)", e.id, ErrWithdrawn, why)
	}
	// In a Publish call: its answer may have come meanwhile.
	select {
	case r := <-e.o.done:
		return e.result(r)
	default:
	}
	return "", fmt.Errorf("publish %s: in a Publish call, unconfirmed: %w", e.id, why)
}

func (e *Enqueued) result(r answer) (string, error) {
	if r.err != nil {
		return "", fmt.Errorf("publish %s: %w", e.id, r.err)
	}
	return r.id, nil
}

// send publishes one batch and tells each of its messages the result. ctx
// ends after the publish timeout.
func (p *Publisher) send(ctx context.Context, batch []outgoing) error {
	n := 0
	for _, o := range batch {
		n += o.fieldSize()
	}
	buf, _ := fieldBuffers.Get().(*[]byte)
	if buf == nil || cap(*buf) < n {
		b := make([]byte, 0, n)
		buf = &b
	}
	fields := (*buf)[:0]
	for _, o := range batch {
		fields = appendMessageField(fields, o)
	}
	req := &pubsubpb.PublishRequest{Topic: p.topic}
	req.ProtoReflect().SetUnknown(fields)
	resp, err := p.rpc.Publish(ctx, req)
	// The call is over (its retries included): nothing reads the bytes
	// any more.
	*buf = fields[:0]
	fieldBuffers.Put(buf)
	if err == nil && len(resp.GetMessageIds()) != len(batch) {
		err = fmt.Errorf("pubsub answered %d message ids for %d messages", len(resp.GetMessageIds()), len(batch))
	}
	for i, o := range batch {
		r := answer{err: err}
		if err == nil {
			r.id = resp.MessageIds[i]
		}
		o.done <- r
	}
	return err
}

// fieldBuffers holds the byte slices of ended calls, for the next ones.
var fieldBuffers sync.Pool // *[]byte

// Field numbers of google.pubsub.v1 (pubsub.proto): PublishRequest's
// messages, and PubsubMessage's data, attributes and ordering_key (a map
// is a repeated entry message of key 1 and value 2).
const (
	fieldRequestMessages protowire.Number = 2
	fieldMessageData     protowire.Number = 1
	fieldMessageAttrs    protowire.Number = 2
	fieldMessageOrdering protowire.Number = 5
	fieldEntryKey        protowire.Number = 1
	fieldEntryValue      protowire.Number = 2
)

// messageSize is the size of o's PubsubMessage in the wire format.
func messageSize(o outgoing) int {
	size := 0
	if len(o.data) > 0 {
		size += protowire.SizeTag(fieldMessageData) + protowire.SizeBytes(len(o.data))
	}
	for k, v := range o.attrs {
		size += protowire.SizeTag(fieldMessageAttrs) + protowire.SizeBytes(entrySize(k, v))
	}
	if o.key != "" {
		size += protowire.SizeTag(fieldMessageOrdering) + protowire.SizeBytes(len(o.key))
	}
	return size
}

// appendMessageField appends to b o's PubsubMessage (its data, attributes
// and ordering key) as one element of a PublishRequest's messages field,
// as proto.Marshal writes it: empty fields left out, the attributes in map
// order (which the wire format leaves free).
func appendMessageField(b []byte, o outgoing) []byte {
	b = protowire.AppendTag(b, fieldRequestMessages, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(o.size))
	if len(o.data) > 0 {
		b = protowire.AppendTag(b, fieldMessageData, protowire.BytesType)
		b = protowire.AppendBytes(b, o.data)
	}
	for k, v := range o.attrs {
		b = protowire.AppendTag(b, fieldMessageAttrs, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(entrySize(k, v)))
		if k != "" {
			b = protowire.AppendTag(b, fieldEntryKey, protowire.BytesType)
			b = protowire.AppendString(b, k)
		}
		if v != "" {
			b = protowire.AppendTag(b, fieldEntryValue, protowire.BytesType)
			b = protowire.AppendString(b, v)
		}
	}
	if o.key != "" {
		b = protowire.AppendTag(b, fieldMessageOrdering, protowire.BytesType)
		b = protowire.AppendString(b, o.key)
	}
	return b
}

// entrySize is the size of an attribute map entry's message.
func entrySize(k, v string) int {
	n := 0
	if k != "" {
		n += protowire.SizeTag(fieldEntryKey) + protowire.SizeBytes(len(k))
	}
	if v != "" {
		n += protowire.SizeTag(fieldEntryValue) + protowire.SizeBytes(len(v))
	}
	return n
}

// Stop sends what is queued, waits for every Publish call in flight, and
// stops the publisher; later Publish calls fail with ErrStopped.
func (p *Publisher) Stop() {
	p.batcher.Stop()
}
