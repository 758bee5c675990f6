package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2"
	vkit "cloud.google.com/go/pubsub/v2/apiv1"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/startdeliver/segment-destination/shared/abbrev"
	"github.com/startdeliver/segment-destination/shared/envelope"
)

const (
	// pullBatch is the most messages one pull asks for.
	pullBatch = 500
	// idsPerRequest bounds the ack ids of one Acknowledge or
	// ModifyAckDeadline request (Pub/Sub limits a request to 512 KB).
	idsPerRequest = 1000
	// lease is how long the run holds the messages it has seen; it renews
	// them when half of it has passed. After a crash they return to the
	// subscription within this time.
	lease = 120 * time.Second
	// progressEvery is the message count between progress lines.
	progressEvery = 1000
	// confirmTimeout bounds the wait for the main topic's confirmations and
	// for the final acks and releases, which run even after an interrupt.
	confirmTimeout = 2 * time.Minute
)

// Attributes that deliver (envelope.AttrError and the like) or Pub/Sub add
// when dead-lettering, and the one replay adds.
const (
	attrReplayedAt = "replayedAt"

	// prefixDeadLetter starts the attributes of Pub/Sub's dead-letter
	// policy, such as CloudPubSubDeadLetterSourceDeliveryCount.
	prefixDeadLetter    = "CloudPubSubDeadLetter"
	attrDeliveryCount   = "CloudPubSubDeadLetterSourceDeliveryCount"
	prefixClientTracing = "googclient_"
)

// classMaxDeliveryAttempts is the class of messages that Pub/Sub's own
// dead-letter policy forwarded: they carry no errorClass.
const classMaxDeliveryAttempts = "max-delivery-attempts"

// subscriptions is the part of Pub/Sub's subscription API a run uses. The
// calls block until Pub/Sub answers or ctx ends; safe for concurrent use.
type subscriptions interface {
	GetSubscription(ctx context.Context, req *pubsubpb.GetSubscriptionRequest) (*pubsubpb.Subscription, error)
	Pull(ctx context.Context, req *pubsubpb.PullRequest) (*pubsubpb.PullResponse, error)
	Acknowledge(ctx context.Context, req *pubsubpb.AcknowledgeRequest) error
	ModifyAckDeadline(ctx context.Context, req *pubsubpb.ModifyAckDeadlineRequest) error
}

// adminSubscriptions is subscriptions on Google's generated client.
type adminSubscriptions struct{ c *vkit.SubscriptionAdminClient }

func (a adminSubscriptions) GetSubscription(ctx context.Context, req *pubsubpb.GetSubscriptionRequest) (*pubsubpb.Subscription, error) {
	return a.c.GetSubscription(ctx, req)
}

func (a adminSubscriptions) Pull(ctx context.Context, req *pubsubpb.PullRequest) (*pubsubpb.PullResponse, error) {
	return a.c.Pull(ctx, req)
}

func (a adminSubscriptions) Acknowledge(ctx context.Context, req *pubsubpb.AcknowledgeRequest) error {
	return a.c.Acknowledge(ctx, req)
}

func (a adminSubscriptions) ModifyAckDeadline(ctx context.Context, req *pubsubpb.ModifyAckDeadlineRequest) error {
	return a.c.ModifyAckDeadline(ctx, req)
}

// batchPublisher publishes messages to the main topic. publish blocks until
// the topic confirmed or refused each message and returns one error (nil on
// confirmation) per message, in order.
type batchPublisher interface {
	publish(ctx context.Context, msgs []*pubsub.Message) []error
}

// topicPublisher is batchPublisher on a Pub/Sub publisher with message
// ordering enabled.
type topicPublisher struct{ p *pubsub.Publisher }

func (t topicPublisher) publish(ctx context.Context, msgs []*pubsub.Message) []error {
	results := make([]*pubsub.PublishResult, len(msgs))
	for i, m := range msgs {
		results[i] = t.p.Publish(ctx, m)
	}
	errs := make([]error, len(msgs))
	paused := map[string]bool{}
	for i, res := range results {
		if _, err := res.Get(ctx); err != nil {
			errs[i] = err
			paused[msgs[i].OrderingKey] = true
		}
	}
	// A failure pauses its ordering key; resume only once every message
	// of the batch has its answer, so none overtakes a failed one.
	for key := range paused {
		t.p.ResumePublish(key)
	}
	return errs
}

// filter selects messages. Empty fields match everything.
type filter struct {
	account string // account id or prefix, lower case
	class   string // errorClass
	message string // Segment messageId
}

func (f filter) empty() bool { return f.account == "" && f.class == "" && f.message == "" }

// match reports whether l passes every filter that is set.
func (f filter) match(l *letter) bool {
	if f.account != "" && !strings.HasPrefix(l.accountID, f.account) {
		return false
	}
	if f.class != "" && l.class != f.class {
		return false
	}
	if f.message != "" && l.messageID != f.message {
		return false
	}
	return true
}

// letter is one message of the dead-letter subscription, described.
type letter struct {
	ackID string
	// id is the Pub/Sub message id in the dead-letter topic.
	id        string
	data      []byte
	attrs     map[string]string
	messageID string
	accountID string
	typ       string
	class     string
	reason    string
	failedAt  string
	// env is the decoded body, or nil with decodeErr.
	env       *envelope.Message
	decodeErr error
}

// describe reads a received message. The body, when it decodes, is the
// truth for account, messageId and type; the attributes serve otherwise.
func describe(rm *pubsubpb.ReceivedMessage) *letter {
	m := rm.GetMessage()
	a := m.GetAttributes()
	l := &letter{
		ackID:     rm.GetAckId(),
		id:        m.GetMessageId(),
		data:      m.GetData(),
		attrs:     a,
		messageID: a[envelope.AttrMessageID],
		accountID: a[envelope.AttrAccountID],
		typ:       a[envelope.AttrType],
		class:     a[envelope.AttrErrorClass],
		reason:    a[envelope.AttrError],
		failedAt:  a[envelope.AttrFailedAt],
	}
	if l.class == "" && a[attrDeliveryCount] != "" {
		l.class = classMaxDeliveryAttempts
		l.reason = "Pub/Sub's dead-letter policy forwarded it after " + a[attrDeliveryCount] + " delivery attempts"
	}
	if l.failedAt == "" && m.GetPublishTime() != nil {
		l.failedAt = m.GetPublishTime().AsTime().UTC().Format(time.RFC3339)
	}
	env, err := envelope.Decode(l.data)
	if err != nil {
		l.decodeErr = err
		return l
	}
	l.env = env
	l.accountID = env.AccountID
	if env.Event.MessageID != "" {
		l.messageID = env.Event.MessageID
	}
	if env.Event.Type != "" {
		l.typ = string(env.Event.Type)
	}
	return l
}

// republished is the message that goes back to the main topic: the
// original body, the attributes without the dead-letter ones plus
// replayedAt, and ingest's ordering key. l must have decoded.
func republished(l *letter, now time.Time) *pubsub.Message {
	attrs := make(map[string]string, len(l.attrs)+1)
	for k, v := range l.attrs {
		switch {
		case k == envelope.AttrError, k == envelope.AttrErrorClass, k == envelope.AttrFailedAt, k == envelope.AttrSourceMessageID,
			strings.HasPrefix(k, prefixDeadLetter),
			// The client's trace context of the dead-letter publish; the
			// replay's publish adds its own when tracing is on.
			strings.HasPrefix(k, prefixClientTracing):
			continue
		}
		attrs[k] = v
	}
	attrs[attrReplayedAt] = now.UTC().Format(time.RFC3339)
	return &pubsub.Message{
		Data:        l.data,
		Attributes:  attrs,
		OrderingKey: envelope.OrderingKey(l.env.AccountID, l.env.Event.PersonKey()),
	}
}

// fate is what a run did with a message it has seen.
type fate int

const (
	fateKept fate = iota
	fateMoved
)

// leased is a group of ack ids the run holds, and when it last renewed
// them.
type leased struct {
	ackIDs  []string
	renewed time.Time
}

// counts are a run's tallies.
type counts struct {
	seen        int // distinct messages
	selected    int // matched and within -limit: moved, listed, or tried
	moved       int
	skipped     int // did not match
	overLimit   int // matched after -limit was reached
	undecodable int // matched, body cannot be decoded
	failed      int // matched, publish refused
	ackFailed   int // moved, but the ack failed: a later run would repeat them
}

// replayer is one run.
type replayer struct {
	subs         subscriptions
	publisher    batchPublisher
	subscription string // full name
	topic        string
	filter       filter
	dryRun       bool
	limit        int
	wait         time.Duration
	progress     time.Duration
	stdout       io.Writer
	stderr       io.Writer
	// now is the clock of replayedAt and of lease renewals.
	now func() time.Time

	c            counts
	held         []leased
	seen         map[string]fate
	started      time.Time
	lastProgress time.Time
	progressSeen int
}

// run pulls until two pulls in a row find nothing, -limit is reached, or
// ctx ends; then releases what it holds and prints the summary.
func (r *replayer) run(ctx context.Context) error {
	r.seen = map[string]fate{}
	r.started = time.Now()
	r.lastProgress = r.started
	// Fail early on a wrong name or an unreachable Pub/Sub, which pulls
	// would only show as silence. Subscriber-only roles may not read
	// subscription metadata; pulls then tell.
	_, err := r.subs.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: r.subscription})
	if err != nil && status.Code(err) != codes.PermissionDenied {
		return fmt.Errorf("dead-letter subscription %s: %w", r.subscription, err)
	}
	if r.dryRun {
		fmt.Fprintf(r.stdout, "%-36s  %-12s  %-8s  %-22s  %-20s  %s\n", "MESSAGE ID", "ACCOUNT", "TYPE", "ERROR CLASS", "FAILED AT", "ERROR")
	}
	var runErr error
	for empty := 0; empty < 2 && (r.limit == 0 || r.c.selected < r.limit); {
		if err := ctx.Err(); err != nil {
			runErr = fmt.Errorf("interrupted: %w", err)
			break
		}
		r.renew(ctx)
		msgs, err := r.pull(ctx)
		if err != nil {
			runErr = err
			break
		}
		if len(msgs) == 0 {
			empty++
			continue
		}
		empty = 0
		r.handle(ctx, msgs)
		r.maybeProgress()
	}
	r.release(ctx)
	r.summary()
	if runErr != nil {
		return runErr
	}
	if n := r.c.undecodable + r.c.failed + r.c.ackFailed; n > 0 && !r.dryRun {
		return fmt.Errorf("%d matching message(s) not cleanly moved: %d cannot be decoded, %d refused by the topic, %d moved but not acked (a later run would repeat them)",
			n, r.c.undecodable, r.c.failed, r.c.ackFailed)
	}
	return nil
}

// pull asks for the next messages and waits up to r.wait for them. An
// empty answer that comes early waits out the rest, so that two empty pulls
// mean the subscription has been quiet for twice r.wait.
func (r *replayer) pull(ctx context.Context) ([]*pubsubpb.ReceivedMessage, error) {
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, r.wait)
	defer cancel()
	resp, err := r.subs.Pull(pctx, &pubsubpb.PullRequest{Subscription: r.subscription, MaxMessages: pullBatch})
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("interrupted: %w", ctx.Err())
	case status.Code(err) == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("pull from %s: %w", r.subscription, err)
	}
	if len(resp.GetReceivedMessages()) == 0 {
		t := time.NewTimer(r.wait - time.Since(start))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return resp.GetReceivedMessages(), nil
}

// handle decides the fate of one pulled batch: matching messages are
// published and then acked; every other one is held for the run.
func (r *replayer) handle(ctx context.Context, msgs []*pubsubpb.ReceivedMessage) {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.GetAckId()
	}
	// Hold the whole batch for the run at once: the subscription's own ack
	// deadline may be shorter than the publishes take.
	r.modify(ctx, ids, lease, "lease")

	var (
		toAck  []string
		keep   []string
		moving []*letter
	)
	for _, rm := range msgs {
		l := describe(rm)
		if f, ok := r.seen[l.id]; ok {
			// Seen before in this run: its earlier lease or ack was lost.
			if f == fateMoved {
				toAck = append(toAck, l.ackID)
			} else {
				keep = append(keep, l.ackID)
			}
			continue
		}
		r.c.seen++
		r.seen[l.id] = fateKept
		switch {
		case !r.filter.match(l):
			r.c.skipped++
		case r.limit > 0 && r.c.selected >= r.limit:
			r.c.overLimit++
		case l.decodeErr != nil:
			r.c.undecodable++
			fmt.Fprintf(r.stderr, "replay: kept message %s (messageId %q, account %s): %v\n", l.id, l.messageID, short(l.accountID), l.decodeErr)
		default:
			r.c.selected++
			if r.dryRun {
				r.list(l)
				break
			}
			moving = append(moving, l)
			continue
		}
		keep = append(keep, l.ackID)
	}

	if len(moving) > 0 {
		now := r.now()
		out := make([]*pubsub.Message, len(moving))
		for i, l := range moving {
			out[i] = republished(l, now)
		}
		// Wait for the answers even after an interrupt: what the topic
		// confirmed must be acked, or the next run repeats it.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), confirmTimeout)
		errs := r.publisher.publish(cctx, out)
		cancel()
		for i, l := range moving {
			if errs[i] != nil {
				r.c.failed++
				fmt.Fprintf(r.stderr, "replay: kept message %s (messageId %q, account %s): publish to %s: %v\n", l.id, l.messageID, short(l.accountID), r.topic, errs[i])
				keep = append(keep, l.ackID)
				continue
			}
			r.c.moved++
			r.seen[l.id] = fateMoved
			toAck = append(toAck, l.ackID)
		}
	}
	if len(keep) > 0 {
		r.held = append(r.held, leased{ackIDs: keep, renewed: r.now()})
	}
	r.ack(ctx, toAck)
}

// ack acknowledges the moved messages. A failed ack leaves a message in the
// subscription although it moved: it is counted and reported.
func (r *replayer) ack(ctx context.Context, ids []string) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), confirmTimeout)
	defer cancel()
	for chunk := range chunks(ids) {
		if err := r.subs.Acknowledge(actx, &pubsubpb.AcknowledgeRequest{Subscription: r.subscription, AckIds: chunk}); err != nil {
			r.c.ackFailed += len(chunk)
			fmt.Fprintf(r.stderr, "replay: %d moved message(s) not acked, they stay in the dead-letter subscription: %v\n", len(chunk), err)
		}
	}
}

// renew extends the lease of held messages when half of it has passed. A
// lost lease only means the message may come again in this run, which the
// run recognises, so failures are reported and not fatal.
func (r *replayer) renew(ctx context.Context) {
	for i := range r.held {
		if r.now().Sub(r.held[i].renewed) < lease/2 {
			continue
		}
		r.modify(ctx, r.held[i].ackIDs, lease, "renew the lease of")
		r.held[i].renewed = r.now()
	}
}

// release gives every held message back to the subscription at once. It
// runs after an interrupt too; what it fails to release returns when its
// lease ends.
func (r *replayer) release(ctx context.Context) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), confirmTimeout)
	defer cancel()
	for _, h := range r.held {
		r.modify(rctx, h.ackIDs, 0, "release")
	}
	r.held = nil
}

// modify sets the ack deadline of ids, reporting failures as warnings.
func (r *replayer) modify(ctx context.Context, ids []string, d time.Duration, what string) {
	for chunk := range chunks(ids) {
		err := r.subs.ModifyAckDeadline(ctx, &pubsubpb.ModifyAckDeadlineRequest{
			Subscription: r.subscription, AckIds: chunk, AckDeadlineSeconds: int32(d / time.Second),
		})
		if err != nil {
			fmt.Fprintf(r.stderr, "replay: warning: could not %s %d message(s) (they return to the subscription within %s): %v\n", what, len(chunk), lease, err)
		}
	}
}

// chunks splits ids into requests of at most idsPerRequest.
func chunks(ids []string) func(yield func([]string) bool) {
	return func(yield func([]string) bool) {
		for len(ids) > 0 {
			n := min(len(ids), idsPerRequest)
			if !yield(ids[:n]) {
				return
			}
			ids = ids[n:]
		}
	}
}

// list prints one message that would move.
func (r *replayer) list(l *letter) {
	class := l.class
	if class == "" {
		class = "-"
	}
	fmt.Fprintf(r.stdout, "%-36s  %-12s  %-8s  %-22s  %-20s  %s\n", l.messageID, short(l.accountID), l.typ, class, l.failedAt, oneLine(l.reason))
}

// maybeProgress prints the progress line every progressEvery messages or
// every r.progress.
func (r *replayer) maybeProgress() {
	if r.progress <= 0 {
		return
	}
	if time.Since(r.lastProgress) < r.progress && r.c.seen/progressEvery == r.progressSeen/progressEvery {
		return
	}
	r.lastProgress = time.Now()
	r.progressSeen = r.c.seen
	verb := "moved"
	n := r.c.moved
	if r.dryRun {
		verb, n = "would move", r.c.selected
	}
	fmt.Fprintf(r.stderr, "replay: %s %d, skipped %d, seen %d (%s)\n", verb, n, r.c.seen-r.c.selected, r.c.seen, time.Since(r.started).Round(time.Second))
}

// summary prints the run's tallies.
func (r *replayer) summary() {
	elapsed := time.Since(r.started).Round(100 * time.Millisecond)
	if r.dryRun {
		fmt.Fprintf(r.stdout, "dry run: %d would move to %s, %d did not match, %d over -limit, %d cannot be decoded; %d seen in %s\n",
			r.c.selected, r.topic, r.c.skipped, r.c.overLimit, r.c.undecodable, r.c.seen, elapsed)
		return
	}
	fmt.Fprintf(r.stdout, "moved %d to %s, %d did not match, %d over -limit, %d cannot be decoded, %d refused by the topic, %d not acked; %d seen in %s\n",
		r.c.moved, r.topic, r.c.skipped, r.c.overLimit, r.c.undecodable, r.c.failed, r.c.ackFailed, r.c.seen, elapsed)
}

// short is an account id as a listing shows it: abbreviated, "-" when
// there is none.
func short(id string) string {
	if id == "" {
		return "-"
	}
	return abbrev.ID(id)
}

// oneLine collapses whitespace so an error stays on its listing line.
func oneLine(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Join(strings.Fields(s), " ")
}
