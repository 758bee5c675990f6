package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/startdeliver/segment-destination/deliver/internal/dedupe"
	"github.com/startdeliver/segment-destination/deliver/internal/identity"
	"github.com/startdeliver/segment-destination/deliver/internal/retry"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/shared/abbrev"
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/failure"
	"github.com/startdeliver/segment-destination/shared/journey"
	"github.com/startdeliver/segment-destination/shared/plan"
	"github.com/startdeliver/segment-destination/shared/segment"
)

// outcome writes what a delivery leaves behind, and nothing else does: the
// event's record (its journey, shared/journey: the completion record of an
// event that is done, delivered or skipped, and the record of one that was
// dead-lettered or is being retried after Startdeliver failed), and the
// dead-letter message of one that failed permanently, with its attributes.
// The writes run detached from the delivery's context, bounded by
// FinishTimeout: an event whose effects are done is recorded at once, even
// when its budget has just run out. A delivered event costs one write, its
// record, as before journeys were kept: the journey rides in it.
type outcome struct {
	completions completions
	dead        deadLetters
	tracer      trace.Tracer
	log         logger
	now         func() time.Time
	timeout     time.Duration
	// payloads keeps each event's properties and traits in its record
	// (RECORD_PAYLOADS).
	payloads bool
}

// logger is the part of slog.Logger outcome uses.
type logger interface {
	ErrorContext(ctx context.Context, msg string, args ...any)
	WarnContext(ctx context.Context, msg string, args ...any)
}

// trip is what one delivery did, for its outcome and the event's record.
// Each stage fills in what it learns.
type trip struct {
	msg       Message
	env       *envelope.Message // nil when the message could not be decoded
	accountID string
	messageID string
	calls     *startdeliver.Calls
	settings  account.Settings
	plan      *plan.Plan
	userID    int64
	customer  int64
	// claim is the event's claim (dedupe), once it has one.
	claim *dedupe.Claim
}

// record is the event's journey as its record keeps it.
func (o *outcome) record(ctx context.Context, j *trip, status, class, reason string) *journey.Record {
	ev := j.env.Event
	r := &journey.Record{
		AccountID: j.accountID, MessageID: j.messageID, Status: status,
		Type: string(ev.Type), Name: ev.Event, UserID: ev.UserID, AnonymousID: ev.AnonymousID,
		Reason: abbrev.String(reason, maxReason), ErrorClass: class,
		Calls: journeyCalls(j.calls.List()), Dropped: []journey.Dropped{},
		Attempts: max(j.msg.DeliveryAttempt, 1), ReceivedAt: j.env.ReceivedAt, CompletedAt: o.now(),
	}
	if ev.Name != "" {
		r.Name = ev.Name
	}
	if pl := j.plan; pl != nil {
		if pl.Usage != nil {
			r.Name = pl.Usage.Name
		}
		r.UserMatch, r.CustomerMatch = journey.Matches(ev, j.settings, pl)
		for _, d := range pl.Dropped {
			r.Dropped = append(r.Dropped, journey.Dropped{Entity: d.Entity, Field: d.Field, Reason: d.Reason})
		}
	}
	if j.userID != 0 {
		id := j.userID
		r.User = &id
	}
	if j.customer != 0 {
		id := j.customer
		r.Customer = &id
	}
	for _, c := range r.Calls {
		if c.Method == "POST" && c.Status >= 200 && c.Status < 300 {
			r.UserCreated = r.UserCreated || c.Route == "/user"
			r.CustomerCreated = r.CustomerCreated || c.Route == "/customer"
		}
	}
	if status == journey.StatusDelivered {
		at := r.CompletedAt
		r.DeliveredAt = &at
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		r.TraceID = sc.TraceID().String()
	}
	// A pending record is the claim (Processor.claim), replaced by the
	// outcome's record: the payload, when kept, comes with that one only,
	// so it is not encoded and written twice.
	if o.payloads && status != journey.StatusPending {
		r.Payload = payload(ev)
	}
	return r
}

// maxReason bounds a record's reason: an error message, which never holds
// the key (the clients scrub it) or a request's bytes beyond an excerpt.
const maxReason = 1000

// journeyCalls numbers each call's attempt: a call repeated after a failed
// one of the same route (the client's in-process retries, or a rerun) is
// its next attempt.
func journeyCalls(calls []startdeliver.Call) []journey.Call {
	out := make([]journey.Call, 0, len(calls))
	failed := map[string]int{}
	for _, c := range calls {
		k := c.Method + " " + c.Route
		out = append(out, journey.Call{Method: c.Method, Route: c.Route, Status: c.Status, Attempt: failed[k] + 1})
		if c.Status >= 200 && c.Status < 300 {
			delete(failed, k)
		} else {
			failed[k]++
		}
	}
	return out
}

// payload is the event's properties and traits as JSON.
func payload(ev *segment.Event) string {
	p := map[string]any{}
	for _, k := range []string{"properties", "traits"} {
		if v, ok := ev.Raw[k]; ok {
			p[k] = v
		}
	}
	b, err := json.Marshal(p)
	if err != nil || len(b) > segment.MaxEventBytes {
		return ""
	}
	return string(b)
}

// done records a finished event (delivered or skipped with class) and
// returns its ack. A record that cannot be written is logged: the event is
// remembered in process and its effects are already in Startdeliver, so a
// nack would only risk repeating them elsewhere.
func (o *outcome) done(ctx context.Context, j *trip, what, class string) Result {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.timeout)
	defer cancel()
	reason := ""
	if j.plan != nil {
		reason = j.plan.Skip
	}
	rec := o.record(ctx, j, what, class, reason)
	ctx, span := o.tracer.Start(ctx, "record completion")
	defer span.End()
	var err error
	for attempt := 1; ; attempt++ {
		if err = o.completions.Complete(ctx, rec); err == nil {
			break
		}
		pause := retry.Backoff(attempt, 50*time.Millisecond, 500*time.Millisecond)
		if attempt >= 3 || !retry.Fits(ctx, pause, 100*time.Millisecond) || retry.Sleep(ctx, pause) != nil {
			break
		}
	}
	if err != nil {
		span.SetStatus(codes.Error, "record completion failed")
		o.log.ErrorContext(ctx, "completion not recorded; a redelivery to another instance could repeat the event",
			"messageId", j.messageID, "account", j.accountID, "error", err)
	}
	return Result{Decision: Ack, Outcome: what, Class: class}
}

// duplicate notes on the event's record that this copy had no effect (a
// write on the duplicate path only), and returns its ack.
func (o *outcome) duplicate(ctx context.Context, j *trip) Result {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.timeout)
	defer cancel()
	if err := o.completions.Duplicate(ctx, j.accountID, j.messageID); err != nil {
		o.log.WarnContext(ctx, "duplicate not noted on the event's record", "messageId", j.messageID, "account", j.accountID, "error", err)
	}
	return Result{Decision: Ack, Outcome: OutcomeDuplicate}
}

// failed turns an error into a decision: a permanent one is dead-lettered
// and acked, anything else is nacked. Either way the event's record says so
// where that is cheap: a dead letter's always, a retry's when Startdeliver
// failed (Firestore is up, so the write costs one call and does not wait
// on an outage).
func (o *outcome) failed(ctx context.Context, j *trip, err error) Result {
	class, perm := classify(err)
	if !perm {
		nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.timeout)
		if j.env != nil && strings.HasPrefix(class, "startdeliver-") {
			o.note(nctx, j, journey.StatusRetrying, class, err)
		} else {
			o.release(nctx, j)
		}
		cancel()
		return Result{Decision: Nack, Outcome: OutcomeRetry, Class: class, Err: err}
	}
	m := j.msg
	attrs := make(map[string]string, len(m.Attributes)+4)
	for k, v := range m.Attributes {
		attrs[k] = v
	}
	attrs[envelope.AttrError] = abbrev.String(err.Error(), envelope.MaxErrorAttr)
	attrs[envelope.AttrErrorClass] = abbrev.String(class, 100)
	attrs[envelope.AttrFailedAt] = o.now().UTC().Format(time.RFC3339)
	if m.ID != "" {
		attrs[envelope.AttrSourceMessageID] = m.ID
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.timeout)
	defer cancel()
	dctx, span := o.tracer.Start(dctx, "publish segment-events-dead", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.system", "gcp_pubsub"), attribute.String("delivery.error_class", class)))
	derr := o.dead.Publish(dctx, m.Data, attrs, m.OrderingKey)
	if derr != nil {
		span.SetStatus(codes.Error, "dead-letter publish failed")
	}
	span.End()
	if derr != nil {
		o.release(dctx, j)
		return Result{Decision: Nack, Outcome: OutcomeRetry, Class: class,
			Err: fmt.Errorf("%w (and dead-lettering failed: %v)", err, derr)}
	}
	// A dead-lettered event's record does not count as completed: once its
	// cause is fixed, the replayed event must take effect.
	if j.env != nil {
		// Within the same FinishTimeout as the dead letter: the outcome's
		// writes together stay inside it (the shutdown grace counts on it).
		o.note(dctx, j, journey.StatusDeadLettered, class, err)
	}
	return Result{Decision: Ack, Outcome: OutcomeDeadLettered, Class: class, Err: err}
}

// note writes the record of an event that did not complete, within ctx's
// deadline. It is best effort: the dead letter (or the redelivery) is what
// keeps the event.
func (o *outcome) note(ctx context.Context, j *trip, status, class string, cause error) {
	if err := o.completions.Failed(ctx, o.record(ctx, j, status, class, cause.Error())); err != nil {
		o.log.WarnContext(ctx, "event record not written", "status", status, "messageId", j.messageID, "account", j.accountID, "error", err)
	}
}

// release gives back the claim of an event nacked without a record of its
// own, so that its redelivery need not wait for the claim to go stale
// (best effort: a claim left behind goes stale).
func (o *outcome) release(ctx context.Context, j *trip) {
	if j.claim == nil {
		return
	}
	if err := o.completions.Release(ctx, j.claim); err != nil {
		o.log.WarnContext(ctx, "claim not released; a copy elsewhere waits until it is stale", "messageId", j.messageID, "account", j.accountID, "error", err)
	}
}

// classify names an error's class and tells whether it is permanent.
// Unknown errors are retryable.
func classify(err error) (class string, permanent bool) {
	if failure.IsPermanent(err) {
		return failure.Class(err), true
	}
	var api *startdeliver.APIError
	switch {
	case errors.As(err, &api):
		return fmt.Sprintf("startdeliver-%d", api.StatusCode), false
	case errors.Is(err, errNotStarted):
		return "not-started", false
	case errors.Is(err, context.DeadlineExceeded):
		return "budget-exceeded", false
	case errors.Is(err, identity.ErrBusy):
		return "identity-busy", false
	case startdeliver.IsRetryable(err):
		return "startdeliver-unavailable", false
	}
	return "unavailable", false
}

// errNotStarted marks an event whose wait for its turn ended (shutdown, or
// push mode's TurnWait) before it started.
var errNotStarted = errors.New("not started")
