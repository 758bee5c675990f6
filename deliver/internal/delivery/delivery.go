package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/startdeliver/segment-destination/deliver/internal/dedupe"
	"github.com/startdeliver/segment-destination/deliver/internal/identity"
	"github.com/startdeliver/segment-destination/deliver/internal/retry"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/shared/abbrev"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/failure"
	"github.com/startdeliver/segment-destination/shared/journey"
	"github.com/startdeliver/segment-destination/shared/plan"
	"github.com/startdeliver/segment-destination/shared/telemetry"
)

// Message is one Pub/Sub message, whichever intake brought it.
type Message struct {
	ID              string
	Data            []byte
	Attributes      map[string]string
	OrderingKey     string
	PublishTime     time.Time
	DeliveryAttempt int // 0 when unknown
}

// Decision is what the intake does with a message.
type Decision int

// The two fates of a message.
const (
	Ack Decision = iota
	Nack
)

// Outcomes, as span attributes, metric attributes and log fields.
const (
	OutcomeDelivered    = "delivered"
	OutcomeDuplicate    = "duplicate"
	OutcomeSkipped      = "skipped"
	OutcomeDeadLettered = "dead_lettered"
	OutcomeRetry        = "retried"
)

// Error classes of the dead-letter errorClass attribute, beyond plan's and
// the Startdeliver client's.
const (
	ClassBadMessage   = envelope.ClassBadMessage
	ClassUnknown      = "unknown-account"
	ClassInvalid      = "invalid-config"
	ClassDisabled     = "account-disabled"
	ClassStartdeliver = startdeliver.ClassRejected
	ClassPanic        = "panic"
	// ClassSealedKey is a message whose sealed API key does not open with
	// deliver's keyset: moved from another message or account, altered, or
	// sealed for a keyset deliver does not hold (replay it once deliver has
	// that key).
	ClassSealedKey = "sealed-key"
)

// Result is the fate of one message, with its reason.
type Result struct {
	Decision Decision
	Outcome  string
	Class    string
	Err      error
}

// accounts returns an account's entry and where it came from:
// accountstore.ErrUnknown for none, another error when it cannot tell
// (retryable). Safe for concurrent use.
type accounts interface {
	Lookup(ctx context.Context, id string) (*accountstore.Entry, accountstore.Source, error)
}

// completions is the record of events (dedupe.Store). Claim makes this
// copy the one that runs, on any instance, or reports a completed event
// (dedupe.ErrHeld: another instance runs a copy now; another error: cannot
// tell); Release gives back a claim whose event left no record. Complete's
// error means the record may not be durable (the event is remembered in
// process regardless). Safe for concurrent use.
type completions interface {
	Claim(ctx context.Context, r *dedupe.Record) (*dedupe.Claim, error)
	Release(ctx context.Context, c *dedupe.Claim) error
	Complete(ctx context.Context, r *dedupe.Record) error
	// Failed writes the record of a dead-lettered or retrying event, never
	// over a completed one; Duplicate notes a copy that had no effect.
	Failed(ctx context.Context, r *dedupe.Record) error
	Duplicate(ctx context.Context, accountID, messageID string) error
}

// claims coordinates creating an entity across instances (identity.Registry).
type claims interface {
	Acquire(ctx context.Context, key string) (*identity.Claim, error)
	Created(ctx context.Context, cl *identity.Claim, id int64) error
	Release(ctx context.Context, cl *identity.Claim) error
}

// deadLetters publishes a message to the dead-letter topic and blocks until
// Pub/Sub confirms it or ctx ends.
type deadLetters interface {
	Publish(ctx context.Context, data []byte, attrs map[string]string, orderingKey string) error
}

// keys opens a sealed API key for its account and message
// (keyseal.Opener); every error is permanent. Safe for concurrent use.
type keys interface {
	Open(sealed []byte, accountID, messageID string) (string, error)
}

// Options configure a Processor. Accounts, Completions, Claims, Client and
// DeadLetters are required.
type Options struct {
	Accounts    accounts
	Completions completions
	Claims      claims
	Client      *startdeliver.Client
	DeadLetters deadLetters
	// Keys opens the API keys sealed by ingest (required for version 2
	// envelopes; version 1 carries the key in plain text).
	Keys keys
	// PerAccount bounds how many events of one account run at once
	// (default 8); the others wait their turn (see the package doc).
	PerAccount int
	// Budget bounds one delivery from its turn to its outcome, retries
	// included (default 5s).
	Budget time.Duration
	// FinishTimeout bounds the outcome's writes (default 2s).
	FinishTimeout time.Duration
	// Cache bounds the id cache of users and customers (default: 10,000
	// entries for 10 minutes).
	Cache CacheConfig
	// RecordPayloads keeps each event's properties and traits in its
	// record, for the event console (RECORD_PAYLOADS; default off).
	RecordPayloads bool
	Logger         *slog.Logger
	Now            func() time.Time
}

// Processor processes messages. Safe for concurrent use.
type Processor struct {
	opts    Options
	log     *slog.Logger
	tracer  trace.Tracer
	metrics *metrics
	copies  copies
	sched   *scheduler
	apply   *applier
	out     *outcome
}

// New returns a Processor.
func New(opts Options) *Processor {
	if opts.PerAccount <= 0 {
		opts.PerAccount = 8
	}
	if opts.Budget <= 0 {
		opts.Budget = 5 * time.Second
	}
	if opts.FinishTimeout <= 0 {
		opts.FinishTimeout = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	tracer := otel.Tracer("github.com/startdeliver/segment-destination/deliver/delivery")
	return &Processor{
		opts:    opts,
		log:     opts.Logger,
		tracer:  tracer,
		metrics: newMetrics(otel.Meter("github.com/startdeliver/segment-destination/deliver/delivery")),
		sched:   newScheduler(opts.PerAccount),
		apply:   newApplier(opts.Client, opts.Claims, opts.Cache, opts.Logger),
		out: &outcome{completions: opts.Completions, dead: opts.DeadLetters, tracer: tracer, log: opts.Logger,
			now: opts.Now, timeout: opts.FinishTimeout, payloads: opts.RecordPayloads},
	}
}

// openKey sets env.APIKey from its sealed key. A key that does not open,
// or that is not the account's, is permanent: the same bytes never open.
func (p *Processor) openKey(env *envelope.Message) error {
	if len(env.SealedKey) == 0 {
		return nil // version 1: the key came in plain text
	}
	if p.opts.Keys == nil {
		return failure.Permanent(ClassSealedKey, errors.New("sealed API key, and deliver has no keyset"))
	}
	id := abbrev.String(env.Event.MessageID, 100)
	key, err := p.opts.Keys.Open(env.SealedKey, env.AccountID, env.Event.MessageID)
	if err != nil {
		return failure.Permanent(ClassSealedKey, fmt.Errorf("event %s: %w", id, err))
	}
	if envelope.AccountID(key) != env.AccountID {
		return failure.Permanent(ClassSealedKey, fmt.Errorf("event %s: sealed API key is not the account's", id))
	}
	env.APIKey, env.SealedKey = key, nil
	return nil
}

// Process decides the fate of one message and always returns a decision,
// whatever the input. ctx bounds only the wait for the event's turn (see
// the package doc): once started, the event runs to its outcome within its
// budget even when ctx ends.
func (p *Processor) Process(ctx context.Context, m Message) (res Result) {
	start := p.opts.Now()
	env, decodeErr := envelope.Decode(m.Data)
	if decodeErr == nil {
		decodeErr = p.openKey(env)
	}
	if env != nil {
		ctx = telemetry.Extract(ctx, env.Trace)
	}
	ctx, span := p.tracer.Start(ctx, "process segment-events",
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "gcp_pubsub"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.message.id", m.ID),
			attribute.Int("messaging.gcp_pubsub.message.delivery_attempt", m.DeliveryAttempt),
			attribute.String("segment.message_id", m.Attributes[envelope.AttrMessageID]),
			attribute.String("segment.type", m.Attributes[envelope.AttrType]),
			attribute.String("account.id", m.Attributes[envelope.AttrAccountID]),
		))
	defer span.End()
	defer func() { p.observe(ctx, m, env, res, start) }()
	defer func() {
		if r := recover(); r != nil {
			err := fmt.Errorf("panic: %v", r)
			p.log.ErrorContext(ctx, "panic in processing; nacked", "pubsubId", m.ID,
				"messageId", m.Attributes[envelope.AttrMessageID], "error", err, "stack", string(debug.Stack()))
			res = Result{Decision: Nack, Outcome: OutcomeRetry, Class: ClassPanic, Err: err}
		}
	}()
	if decodeErr != nil {
		return p.out.failed(ctx, &trip{msg: m}, decodeErr)
	}
	return p.deliver(ctx, m, env)
}

// deliver runs the stages after decode.
func (p *Processor) deliver(ctx context.Context, m Message, env *envelope.Message) Result {
	ev := env.Event
	j := &trip{msg: m, env: env, accountID: env.AccountID, messageID: ev.MessageID, calls: &startdeliver.Calls{}}
	// guard: the only copy running here, and the account's turn.
	disown, err := p.copies.own(ctx, env.AccountID, ev.MessageID)
	if err != nil {
		return p.out.failed(ctx, j, fmt.Errorf("wait for a copy of the event: %w: %w", errNotStarted, err))
	}
	defer disown()
	t, err := p.sched.acquire(ctx, env.AccountID)
	if err != nil {
		return p.out.failed(ctx, j, fmt.Errorf("wait for the account's turn: %w: %w", errNotStarted, err))
	}
	defer t.release()
	// dedupe: the only copy running anywhere, or a duplicate. Started: from
	// here on the event runs on its own budget, which starts again after a
	// wait for another instance's copy.
	ctx, cancel, err := p.claim(ctx, t, j)
	defer cancel()
	if err != nil {
		return p.out.failed(ctx, j, err)
	}
	if j.claim.Completed {
		return p.out.duplicate(ctx, j)
	}
	// plan
	entry, pl, err := p.plan(ctx, env, j)
	if err != nil {
		return p.out.failed(ctx, j, err)
	}
	if pl.Skip != "" {
		t.release()
		return p.out.done(ctx, j, OutcomeSkipped, pl.SkipClass)
	}
	// apply
	acct := startdeliver.Account{ID: env.AccountID, APIKey: env.APIKey, BaseURL: entry.Account.StartdeliverAPIURL}
	j.userID, j.customer, err = p.apply.apply(startdeliver.WithCalls(ctx, j.calls),
		job{acct: acct, accountID: env.AccountID, turn: t, plan: pl, received: env.ReceivedAt})
	t.release()
	// outcome
	if err != nil {
		return p.out.failed(ctx, j, err)
	}
	return p.out.done(ctx, j, OutcomeDelivered, "")
}

// claim claims the event for this copy (dedupe.Store.Claim) and returns the
// context of the delivery's budget. While another instance runs a copy,
// the event waits on the intake's ctx, giving its account's slot back, and
// claims again: waiting is not failing, and a wait that ctx ends is a nack
// of an event that did not start. The returned context is ctx's values on
// a budget of their own, which cancel ends.
func (p *Processor) claim(ctx context.Context, t *turn, j *trip) (context.Context, context.CancelFunc, error) {
	for n := 1; ; n++ {
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.Budget)
		cl, err := p.claimOnce(bctx, j)
		if err == nil {
			j.claim = cl
			return bctx, cancel, nil
		}
		if !errors.Is(err, dedupe.ErrHeld) {
			return bctx, cancel, err
		}
		cancel()
		t.pause()
		if err := retry.Sleep(ctx, retry.Backoff(n, 50*time.Millisecond, time.Second)); err != nil {
			return ctx, func() {}, fmt.Errorf("wait for a copy of the event on another instance: %w: %w", errNotStarted, err)
		}
		if err := t.resume(ctx); err != nil {
			return ctx, func() {}, fmt.Errorf("wait for the account's turn: %w: %w", errNotStarted, err)
		}
	}
}

// claimOnce makes one claim, in its own span.
func (p *Processor) claimOnce(ctx context.Context, j *trip) (*dedupe.Claim, error) {
	ctx, span := p.tracer.Start(ctx, "dedupe check")
	defer span.End()
	cl, err := p.opts.Completions.Claim(ctx, p.out.record(ctx, j, journey.StatusPending, "", ""))
	switch {
	case errors.Is(err, dedupe.ErrHeld):
		span.SetAttributes(attribute.Bool("delivery.held_elsewhere", true))
		return nil, err
	case err != nil:
		span.SetStatus(codes.Error, "dedupe check failed")
		return nil, fmt.Errorf("check completion: %w", err)
	}
	span.SetAttributes(attribute.Bool("delivery.duplicate", cl.Completed))
	return cl, nil
}

// plan loads the account's configuration, merges the event's settings into
// it, and plans the event.
func (p *Processor) plan(ctx context.Context, env *envelope.Message, j *trip) (*accountstore.Entry, *plan.Plan, error) {
	entry, err := p.config(ctx, env.AccountID)
	if err != nil {
		return nil, nil, err
	}
	settings := entry.Account.Settings
	if env.Settings != nil {
		settings = settings.With(*env.Settings)
	}
	j.settings = settings
	pl, err := plan.Decide(env.Event, settings, entry.Compiled)
	if err != nil {
		return nil, nil, err // permanent, with its class (plan.Decide)
	}
	j.plan = pl
	trace.SpanFromContext(ctx).SetAttributes(attribute.Int("delivery.dropped_fields", len(pl.Dropped)))
	for _, d := range pl.Dropped {
		p.log.InfoContext(ctx, "value left out", "entity", d.Entity, "field", d.Field, "reason", d.Reason,
			"messageId", env.Event.MessageID, "account", env.AccountID)
	}
	return entry, pl, nil
}

// config loads the account's compiled configuration. A disabled account's
// events are dead-lettered, so that they can be replayed once it is
// enabled again.
func (p *Processor) config(ctx context.Context, accountID string) (*accountstore.Entry, error) {
	ctx, span := p.tracer.Start(ctx, "config lookup", trace.WithAttributes(attribute.String("account.id", accountID)))
	defer span.End()
	entry, source, err := p.opts.Accounts.Lookup(ctx, accountID)
	span.SetAttributes(attribute.String("config.source", string(source)))
	p.metrics.lookup(ctx, source, err)
	switch {
	case errors.Is(err, accountstore.ErrUnknown):
		span.SetStatus(codes.Error, "unknown account")
		return nil, failure.Permanent(ClassUnknown, fmt.Errorf("account %s is not registered", abbrev.ID(accountID)))
	case err != nil:
		span.SetStatus(codes.Error, "config unavailable")
		return nil, fmt.Errorf("load account config: %w", err)
	case entry.Invalid != nil:
		span.SetStatus(codes.Error, "invalid config")
		return nil, failure.Permanent(ClassInvalid, entry.Invalid)
	case entry.Disabled:
		span.SetStatus(codes.Error, "account disabled")
		return nil, failure.Permanent(ClassDisabled, fmt.Errorf("account %s is disabled", abbrev.ID(accountID)))
	}
	return entry, nil
}

// observe ends a message's processing: span status, one log line, metrics.
func (p *Processor) observe(ctx context.Context, m Message, env *envelope.Message, res Result, start time.Time) {
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(attribute.String("delivery.outcome", res.Outcome))
	if res.Class != "" {
		span.SetAttributes(attribute.String("delivery.error_class", res.Class))
	}
	if res.Err != nil {
		span.RecordError(res.Err)
		span.SetStatus(codes.Error, res.Outcome)
	} else {
		span.SetStatus(codes.Ok, res.Outcome)
	}
	attrs := []any{"outcome", res.Outcome, "pubsubId", m.ID, "messageId", m.Attributes[envelope.AttrMessageID],
		"account", m.Attributes[envelope.AttrAccountID], "type", m.Attributes[envelope.AttrType]}
	if res.Class != "" {
		attrs = append(attrs, "errorClass", res.Class)
	}
	level := slog.LevelDebug
	switch res.Outcome {
	case OutcomeDeadLettered:
		level = slog.LevelWarn
		attrs = append(attrs, "error", res.Err.Error())
	case OutcomeRetry:
		level = slog.LevelWarn
		attrs = append(attrs, "error", res.Err.Error(), "deliveryAttempt", m.DeliveryAttempt)
	}
	p.log.Log(ctx, level, "event processed", attrs...)
	var received time.Time
	if env != nil {
		received = env.ReceivedAt
	}
	p.metrics.record(ctx, res, m.Attributes, received, p.opts.Now().Sub(start), p.opts.Now())
}
