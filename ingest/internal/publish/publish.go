// Package publish is ingest's one long-lived Pub/Sub publisher: batching,
// ordering by person, and a Publish that returns only once Pub/Sub has
// confirmed the message.
package publish

import (
	"context"
	"fmt"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/startdeliver/segment-destination/shared/envelope"
)

// Options tune the publisher. Zero values take the defaults noted.
type Options struct {
	// Ordering publishes with the envelope's ordering key (default on), so a
	// subscription with message ordering hands one person's events to
	// deliver in order.
	DisableOrdering bool
	// DelayThreshold is how long a batch waits to fill: ingest answers only
	// after the publish is confirmed, so this delay is added to every
	// request's latency. Default 1ms.
	DelayThreshold time.Duration
	// CountThreshold is the number of messages that sends a batch at once.
	// Default 100.
	CountThreshold int
	// Timeout bounds one publish (default 10s): past it the request answers
	// 503 and Segment retries.
	Timeout time.Duration
}

// Publisher publishes envelopes to one topic. Safe for concurrent use.
type Publisher struct {
	p       *pubsub.Publisher
	topic   string
	timeout time.Duration
	order   bool
}

// New returns a publisher for topic (a short name or a full resource name).
func New(client *pubsub.Client, topic string, opts Options) *Publisher {
	p := client.Publisher(topic)
	p.EnableMessageOrdering = !opts.DisableOrdering
	if opts.DelayThreshold <= 0 {
		opts.DelayThreshold = time.Millisecond
	}
	if opts.CountThreshold <= 0 {
		opts.CountThreshold = 100
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	p.PublishSettings.DelayThreshold = opts.DelayThreshold
	p.PublishSettings.CountThreshold = opts.CountThreshold
	p.PublishSettings.Timeout = opts.Timeout
	return &Publisher{p: p, topic: topic, timeout: opts.Timeout, order: !opts.DisableOrdering}
}

// Publish sends msg and waits for Pub/Sub's confirmation, ctx's end, or the
// publish timeout. After a failure on an ordering key, the key is resumed
// so that the next event of that person can be published (Segment's retry
// re-sends the failed one).
func (p *Publisher) Publish(ctx context.Context, msg *envelope.Encoded) error {
	m := &pubsub.Message{Data: msg.Data, Attributes: msg.Attributes}
	if p.order {
		m.OrderingKey = msg.OrderingKey
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	res := p.p.Publish(ctx, m)
	if _, err := res.Get(ctx); err != nil {
		if p.order {
			p.p.ResumePublish(m.OrderingKey)
		}
		return fmt.Errorf("publish %s to %s: %w", msg.Attributes[envelope.AttrMessageID], p.topic, err)
	}
	return nil
}

// Stop sends what is buffered and waits for it, then stops the publisher.
func (p *Publisher) Stop() {
	p.p.Stop()
}
