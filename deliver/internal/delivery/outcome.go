package delivery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/startdeliver/segment-destination/deliver/internal/dedupe"
	"github.com/startdeliver/segment-destination/deliver/internal/identity"
	"github.com/startdeliver/segment-destination/deliver/internal/retry"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/shared/abbrev"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/failure"
)

// outcome writes what a delivery leaves behind, and nothing else does: the
// completion record of an event that is done (delivered or skipped), and
// the dead-letter message of one that failed permanently, with its
// attributes. Both writes run detached from the delivery's context, bounded
// by FinishTimeout: an event whose effects are done is recorded at once,
// even when its budget has just run out.
type outcome struct {
	completions completions
	dead        deadLetters
	tracer      trace.Tracer
	log         logger
	now         func() time.Time
	timeout     time.Duration
}

// logger is the part of slog.Logger outcome uses.
type logger interface {
	ErrorContext(ctx context.Context, msg string, args ...any)
}

// journey is what one delivery did, for its outcome.
type journey struct {
	msg       Message
	accountID string
	messageID string
	calls     *startdeliver.Calls
}

// done records a finished event (delivered or skipped with class) and
// returns its ack. A record that cannot be written is logged: the event is
// remembered in process and its effects are already in Startdeliver, so a
// nack would only risk repeating them elsewhere.
func (o *outcome) done(ctx context.Context, j journey, what, class string) Result {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.timeout)
	defer cancel()
	ctx, span := o.tracer.Start(ctx, "record completion")
	defer span.End()
	rec := dedupe.Record{AccountID: j.accountID, MessageID: j.messageID, Outcome: what, Class: class}
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

// failed turns an error into a decision: a permanent one is dead-lettered
// and acked, anything else is nacked.
func (o *outcome) failed(ctx context.Context, j journey, err error) Result {
	class, perm := classify(err)
	if !perm {
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
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.timeout)
	defer cancel()
	ctx, span := o.tracer.Start(ctx, "publish segment-events-dead", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.system", "gcp_pubsub"), attribute.String("delivery.error_class", class)))
	defer span.End()
	if derr := o.dead.Publish(ctx, m.Data, attrs, m.OrderingKey); derr != nil {
		span.SetStatus(codes.Error, "dead-letter publish failed")
		return Result{Decision: Nack, Outcome: OutcomeRetry, Class: class,
			Err: fmt.Errorf("%w (and dead-lettering failed: %v)", err, derr)}
	}
	// A dead-lettered event is not recorded as completed: once its cause is
	// fixed, the replayed event must take effect.
	return Result{Decision: Ack, Outcome: OutcomeDeadLettered, Class: class, Err: err}
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
