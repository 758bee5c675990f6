// Package delivery is deliver's processing of one Pub/Sub message: it reads
// the envelope, skips what was already done, loads the account's
// configuration, plans the event, carries the plan out in Startdeliver, and
// decides the message's fate (docs/api.md §2):
//
//   - done, duplicate or skipped → ack;
//   - retryable failure (Startdeliver 408/429/5xx, network, Firestore
//     unavailable) → nack, after the client's quick in-process retries;
//   - permanent failure (Startdeliver 400/401/403/404/422, a config that
//     cannot apply, no value to match on, an unreadable message) → publish
//     to the dead-letter topic with `error` and `errorClass`, then ack. If
//     that publish fails, nack: nothing is dropped.
//
// The three intakes (pull, push, Eventarc) all call Processor.Process.
package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"

	"github.com/startdeliver/segment-destination/deliver/internal/identity"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/failure"
	"github.com/startdeliver/segment-destination/shared/plan"
	"github.com/startdeliver/segment-destination/shared/segment"
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

// Error classes of the dead-letter errorClass attribute, beyond plan's.
const (
	ClassBadMessage   = envelope.ClassBadMessage
	ClassUnknown      = "unknown-account"
	ClassInvalid      = "invalid-config"
	ClassStartdeliver = "startdeliver-rejected"
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

// completions is the record of completed events. Done's error means "cannot
// tell"; Complete's means the record may not be durable (the event is
// remembered in process regardless). Safe for concurrent use.
type completions interface {
	Done(ctx context.Context, accountID, messageID string) (bool, error)
	Complete(ctx context.Context, accountID, messageID, outcome string) error
}

// claims coordinates creating an entity across instances (identity.Claims).
type claims interface {
	Acquire(ctx context.Context, key string) (*identity.Claim, error)
	Created(ctx context.Context, cl *identity.Claim, id int64) error
	Release(ctx context.Context, cl *identity.Claim) error
}

// deadLetters publishes a message to the dead-letter topic and blocks until
// Pub/Sub confirms it.
type deadLetters interface {
	Publish(ctx context.Context, data []byte, attrs map[string]string, orderingKey string) error
}

// Options configure a Processor. Accounts, Completions, Claims, Client and
// DeadLetters are required.
type Options struct {
	Accounts    accounts
	Completions completions
	Claims      claims
	Client      *startdeliver.Client
	DeadLetters deadLetters
	// PerAccount bounds how many events of one account are processed at
	// once (default 8), so that one slow account cannot take every worker.
	PerAccount int
	// Attempts is how many times one delivery runs a plan that fails
	// retryably before the message is nacked (default 3); MaxRetryWait caps
	// the pauses between them (default 3s).
	Attempts     int
	MaxRetryWait time.Duration
	// AccountWait is how long an event waits for its account's slot before
	// it is nacked for later (default 2s).
	AccountWait time.Duration
	Logger      *slog.Logger
	Now         func() time.Time
}

// Processor processes messages. Safe for concurrent use.
type Processor struct {
	opts    Options
	log     *slog.Logger
	tracer  trace.Tracer
	metrics *metrics

	mu    sync.Mutex
	slots map[string]chan struct{}
	// inflight holds the events being processed here, by account and
	// messageId, so that two copies of one event (a Segment retry, a
	// redelivery while the first is still running) never run at once.
	inflight map[string]*inflight
	// creating shares one creation per identity among this process's
	// concurrent events; claims do the same across instances.
	creating singleflight.Group
}

// New returns a Processor.
func New(opts Options) *Processor {
	if opts.PerAccount <= 0 {
		opts.PerAccount = 8
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 3
	}
	if opts.MaxRetryWait <= 0 {
		opts.MaxRetryWait = 3 * time.Second
	}
	if opts.AccountWait <= 0 {
		opts.AccountWait = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Processor{
		opts:     opts,
		log:      opts.Logger,
		tracer:   otel.Tracer("github.com/startdeliver/segment-destination/deliver/delivery"),
		metrics:  newMetrics(otel.Meter("github.com/startdeliver/segment-destination/deliver/delivery")),
		slots:    map[string]chan struct{}{},
		inflight: map[string]*inflight{},
	}
}

// inflight is one event being processed; done closes when it ends.
type inflight struct {
	done    chan struct{}
	waiters int
}

// own makes this delivery the only one of its event in this process: a
// copy already running is waited for (at most AccountWait, then the event
// is retried later), so that the dedupe check after it sees its record.
func (p *Processor) own(ctx context.Context, accountID, messageID string) (func(), error) {
	key := accountID + "/" + messageID
	t := time.NewTimer(p.opts.AccountWait)
	defer t.Stop()
	for {
		p.mu.Lock()
		cur, busy := p.inflight[key]
		if !busy {
			mine := &inflight{done: make(chan struct{})}
			p.inflight[key] = mine
			p.mu.Unlock()
			return func() {
				p.mu.Lock()
				delete(p.inflight, key)
				p.mu.Unlock()
				close(mine.done)
			}, nil
		}
		cur.waiters++
		p.mu.Unlock()
		var err error
		select {
		case <-cur.done:
		case <-t.C:
			err = fmt.Errorf("event %s of account %s: %w", clip(messageID, 100), short(accountID), errCopyInFlight)
		case <-ctx.Done():
			err = ctx.Err()
		}
		p.mu.Lock()
		cur.waiters--
		p.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
}

// waiting tells how many deliveries wait for a copy of the event (tests).
func (p *Processor) waiting(accountID, messageID string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.inflight[accountID+"/"+messageID]; ok {
		return cur.waiters
	}
	return 0
}

var errCopyInFlight = errors.New("a copy of this event is being processed")

// Process decides the fate of one message. It never panics on bad input and
// always returns a decision.
func (p *Processor) Process(ctx context.Context, m Message) Result {
	start := p.opts.Now()
	env, decodeErr := envelope.Decode(m.Data)
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

	var res Result
	if decodeErr != nil {
		res = p.fail(ctx, m, "", decodeErr)
	} else {
		res = p.process(ctx, m, env)
	}
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
	return res
}

func (p *Processor) process(ctx context.Context, m Message, env *envelope.Message) Result {
	ev := env.Event
	disown, err := p.own(ctx, env.AccountID, ev.MessageID)
	if err != nil {
		return p.fail(ctx, m, env.AccountID, err)
	}
	defer disown()
	// The account's slot comes first: an event that must wait too long for
	// it is retried later without having paid for a dedupe read. It is
	// given back as soon as Startdeliver's part is done, before the
	// completion record is written, so it bounds calls to Startdeliver and
	// nothing else.
	release, err := p.acquire(ctx, env.AccountID)
	if err != nil {
		return p.fail(ctx, m, env.AccountID, err)
	}
	var once sync.Once
	free := func() { once.Do(release) }
	defer free()
	done, err := p.isDone(ctx, env.AccountID, ev.MessageID)
	if err != nil {
		return p.fail(ctx, m, env.AccountID, err)
	}
	if done {
		return Result{Decision: Ack, Outcome: OutcomeDuplicate}
	}
	entry, err := p.config(ctx, env.AccountID)
	if err != nil {
		return p.fail(ctx, m, env.AccountID, err)
	}
	if entry.Disabled {
		return Result{Decision: Ack, Outcome: OutcomeSkipped, Class: "account-disabled"}
	}
	settings := entry.Account.Settings
	if len(env.Settings) > 0 {
		var o account.SettingsOverride
		if err := json.Unmarshal(env.Settings, &o); err != nil {
			return p.fail(ctx, m, env.AccountID, failure.Permanent(ClassBadMessage, fmt.Errorf("settings in message: %w", err)))
		}
		settings = settings.With(o)
	}
	pl, err := plan.Decide(ev, settings, entry.Compiled)
	if err != nil {
		class := plan.ClassEvent
		var pe *plan.Error
		if errors.As(err, &pe) {
			class = pe.Class
		}
		// plan's errors are all permanent (plan.Decide).
		return p.fail(ctx, m, env.AccountID, failure.Permanent(class, err))
	}
	trace.SpanFromContext(ctx).SetAttributes(attribute.Int("delivery.dropped_fields", len(pl.Dropped)))
	for _, d := range pl.Dropped {
		p.log.InfoContext(ctx, "value left out", "entity", d.Entity, "field", d.Field, "reason", d.Reason,
			"messageId", ev.MessageID, "account", env.AccountID)
	}
	if pl.Skip != "" {
		free()
		p.complete(ctx, env.AccountID, ev.MessageID, OutcomeSkipped)
		return Result{Decision: Ack, Outcome: OutcomeSkipped, Class: pl.Skip}
	}
	acct := startdeliver.Account{APIKey: env.APIKey, BaseURL: entry.Account.StartdeliverAPIURL}
	if err := p.executeWithRetries(ctx, acct, env.AccountID, ev, pl, env.ReceivedAt); err != nil {
		free()
		return p.fail(ctx, m, env.AccountID, err)
	}
	free()
	p.complete(ctx, env.AccountID, ev.MessageID, OutcomeDelivered)
	return Result{Decision: Ack, Outcome: OutcomeDelivered}
}

// isDone checks the record of completed events.
func (p *Processor) isDone(ctx context.Context, accountID, messageID string) (bool, error) {
	ctx, span := p.tracer.Start(ctx, "dedupe check")
	defer span.End()
	done, err := p.opts.Completions.Done(ctx, accountID, messageID)
	span.SetAttributes(attribute.Bool("delivery.duplicate", done))
	if err != nil {
		span.SetStatus(codes.Error, "dedupe check failed")
		return false, fmt.Errorf("check completion: %w", err)
	}
	return done, nil
}

// config loads the account's compiled configuration.
func (p *Processor) config(ctx context.Context, accountID string) (*accountstore.Entry, error) {
	ctx, span := p.tracer.Start(ctx, "config lookup", trace.WithAttributes(attribute.String("account.id", accountID)))
	defer span.End()
	entry, source, err := p.opts.Accounts.Lookup(ctx, accountID)
	span.SetAttributes(attribute.String("config.source", string(source)))
	p.metrics.lookup(ctx, source, err)
	switch {
	case errors.Is(err, accountstore.ErrUnknown):
		span.SetStatus(codes.Error, "unknown account")
		return nil, failure.Permanent(ClassUnknown, fmt.Errorf("account %s is not registered", short(accountID)))
	case err != nil:
		span.SetStatus(codes.Error, "config unavailable")
		return nil, fmt.Errorf("load account config: %w", err)
	case entry.Invalid != nil:
		span.SetStatus(codes.Error, "invalid config")
		return nil, failure.Permanent(ClassInvalid, entry.Invalid)
	}
	return entry, nil
}

// acquire takes one of the account's processing slots, waiting at most
// AccountWait; past that the event is retried later, so that a slow account
// holds at most PerAccount workers.
func (p *Processor) acquire(ctx context.Context, accountID string) (func(), error) {
	p.mu.Lock()
	slot, ok := p.slots[accountID]
	if !ok {
		slot = make(chan struct{}, p.opts.PerAccount)
		p.slots[accountID] = slot
	}
	p.mu.Unlock()
	t := time.NewTimer(p.opts.AccountWait)
	defer t.Stop()
	select {
	case slot <- struct{}{}:
		return func() { <-slot }, nil
	case <-t.C:
		return nil, fmt.Errorf("account %s has %d events in progress: %w", short(accountID), p.opts.PerAccount, errAccountBusy)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

var errAccountBusy = errors.New("account busy")

// complete records the event as done. A failed write is logged: the event
// is remembered in process, and its effects are already in Startdeliver, so
// nacking would only risk repeating them elsewhere.
func (p *Processor) complete(ctx context.Context, accountID, messageID, outcome string) {
	ctx, span := p.tracer.Start(ctx, "record completion")
	defer span.End()
	// The effects are done: try hard (a few quick attempts, detached from
	// the delivery's cancellation) to make the record durable, since
	// without it a redelivery elsewhere would repeat them.
	ctx = context.WithoutCancel(ctx)
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = p.opts.Completions.Complete(ctx, accountID, messageID, outcome); err == nil {
			return
		}
		time.Sleep(backoff(attempt, 0))
	}
	if err != nil {
		span.SetStatus(codes.Error, "record completion failed")
		p.log.ErrorContext(ctx, "completion not recorded; a redelivery to another instance could repeat the event",
			"messageId", messageID, "account", accountID, "error", err)
	}
}

// fail turns an error into a decision: permanent errors are dead-lettered
// and acked, everything else is nacked.
func (p *Processor) fail(ctx context.Context, m Message, accountID string, err error) Result {
	class, perm := classify(err)
	if !perm {
		return Result{Decision: Nack, Outcome: OutcomeRetry, Class: class, Err: err}
	}
	attrs := make(map[string]string, len(m.Attributes)+4)
	for k, v := range m.Attributes {
		attrs[k] = v
	}
	attrs[envelope.AttrError] = clip(err.Error(), envelope.MaxErrorAttr)
	attrs[envelope.AttrErrorClass] = class
	attrs[envelope.AttrFailedAt] = p.opts.Now().UTC().Format(time.RFC3339)
	if m.ID != "" {
		attrs[envelope.AttrSourceMessageID] = m.ID
	}
	ctx, span := p.tracer.Start(ctx, "publish segment-events-dead", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.system", "gcp_pubsub"), attribute.String("delivery.error_class", class)))
	defer span.End()
	if derr := p.opts.DeadLetters.Publish(ctx, m.Data, attrs, m.OrderingKey); derr != nil {
		span.SetStatus(codes.Error, "dead-letter publish failed")
		return Result{Decision: Nack, Outcome: OutcomeRetry, Class: class,
			Err: fmt.Errorf("%w (and dead-lettering failed: %v)", err, derr)}
	}
	// A dead-lettered event is not recorded as completed: once its cause is
	// fixed, the replayed event must take effect.
	return Result{Decision: Ack, Outcome: OutcomeDeadLettered, Class: class, Err: err}
}

// classify tells permanent failures from retryable ones, and names the
// class. Unknown errors are retryable.
func classify(err error) (class string, permanentErr bool) {
	if failure.IsPermanent(err) {
		return failure.Class(err), true
	}
	var api *startdeliver.APIError
	if errors.As(err, &api) {
		if api.Retryable() {
			return fmt.Sprintf("startdeliver-%d", api.StatusCode), false
		}
		return ClassStartdeliver, true
	}
	switch {
	case errors.Is(err, errAccountBusy):
		return "account-busy", false
	case errors.Is(err, errCopyInFlight):
		return "copy-in-flight", false
	case errors.Is(err, identity.ErrBusy):
		return "identity-busy", false
	case startdeliver.IsRetryable(err):
		return "startdeliver-unavailable", false
	}
	return "unavailable", false
}

// executeWithRetries runs the plan, and runs it again after a short,
// jittered pause when it fails retryably, so that a brief fault does not
// spend one of Pub/Sub's delivery attempts (a subscription may allow as few
// as 5). Each run finds before it creates, so a rerun makes nothing twice;
// a usage record that failed is posted again, as a redelivery would.
func (p *Processor) executeWithRetries(ctx context.Context, acct startdeliver.Account, accountID string, ev *segment.Event, pl *plan.Plan, received time.Time) error {
	var err error
	waited := time.Duration(0)
	for attempt := 1; ; attempt++ {
		err = p.execute(ctx, acct, accountID, ev, pl, received)
		if err == nil || attempt >= p.opts.Attempts {
			return err
		}
		if _, perm := classify(err); perm {
			return err
		}
		pause := backoff(attempt, startdeliver.RetryAfter(err))
		if waited+pause > p.opts.MaxRetryWait {
			return err
		}
		waited += pause
		trace.SpanFromContext(ctx).AddEvent("retry", trace.WithAttributes(
			attribute.Int("attempt", attempt+1), attribute.String("error", clip(err.Error(), 200))))
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// backoff is the pause before attempt+1: Retry-After when Startdeliver gave
// one, else 200ms doubling per attempt with full jitter.
func backoff(attempt int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return retryAfter
	}
	ceiling := 200 * time.Millisecond << (attempt - 1)
	return time.Duration(rand.Int64N(int64(ceiling))) + 10*time.Millisecond
}

// execute carries a plan out: the customer first (so the user can link to
// it), then the user, then the usage record.
func (p *Processor) execute(ctx context.Context, acct startdeliver.Account, accountID string, ev *segment.Event, pl *plan.Plan, received time.Time) error {
	var customerID, userID int64
	var err error
	if pl.Customer != nil {
		if customerID, err = p.upsert(ctx, acct, accountID, startdeliver.KindCustomer, pl.Customer, nil); err != nil {
			return fmt.Errorf("customer: %w", err)
		}
	}
	if pl.User != nil {
		var link startdeliver.Fields
		if pl.Link && customerID != 0 {
			link = startdeliver.Fields{"customer": customerID}
		}
		if userID, err = p.upsert(ctx, acct, accountID, startdeliver.KindUser, pl.User, link); err != nil {
			return fmt.Errorf("user: %w", err)
		}
	}
	if pl.Usage == nil {
		return nil
	}
	u := startdeliver.Usage{
		User:       userID,
		Customer:   customerID,
		Type:       pl.Usage.Type,
		Name:       pl.Usage.Name,
		Timestamp:  pl.Usage.Timestamp,
		Properties: pl.Usage.Properties,
		ExternalID: pl.Usage.ExternalID,
	}
	if u.Timestamp.IsZero() {
		u.Timestamp = received
	}
	_, err = p.opts.Client.RecordUsage(ctx, acct, u)
	if errors.Is(err, startdeliver.ErrNotFound) {
		// The cached user is gone from Startdeliver: forget it, resolve the
		// user again (creating it if need be), and record once more.
		p.opts.Client.ForgetID(acct, startdeliver.KindUser, userID)
		if u.User, err = p.upsert(ctx, acct, accountID, startdeliver.KindUser, pl.User, nil); err != nil {
			return fmt.Errorf("user: %w", err)
		}
		_, err = p.opts.Client.RecordUsage(ctx, acct, u)
	}
	if err != nil {
		return fmt.Errorf("record usage: %w", err)
	}
	return nil
}

// upsert finds the entity, updates what changed, or creates it under a
// cross-instance claim. extra are fields to set on top of the plan's (the
// user's link to its customer).
func (p *Processor) upsert(ctx context.Context, acct startdeliver.Account, accountID string, kind startdeliver.Kind, e *plan.Entity, extra startdeliver.Fields) (int64, error) {
	m := startdeliver.Match{Field: e.Match.Field, Value: e.Match.Value}
	update := startdeliver.Fields(e.Update)
	if len(extra) > 0 {
		update = merge(update, extra)
	}
	if len(update) == 0 {
		// Nothing to change: the cached lookup is all that is needed.
		id, err := p.opts.Client.LookupID(ctx, acct, kind, m)
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, startdeliver.ErrNotFound) {
			return 0, err
		}
	} else {
		found, err := p.opts.Client.Find(ctx, acct, kind, m)
		if err == nil {
			id, ok := found.ID()
			if !ok {
				return 0, failure.Permanent(ClassStartdeliver, fmt.Errorf("found %s has no id", kind))
			}
			if _, _, err := p.opts.Client.UpdateChanged(ctx, acct, kind, found, update); err != nil {
				return 0, err
			}
			p.opts.Client.Put(acct, kind, m, id)
			return id, nil
		}
		if !errors.Is(err, startdeliver.ErrNotFound) {
			return 0, err
		}
	}
	return p.create(ctx, acct, accountID, kind, m, merge(startdeliver.Fields(e.Create), extra), update)
}

// create makes a new entity, once across every instance: the first to claim
// the identity creates it, the others use its id and apply their own
// update.
func (p *Processor) create(ctx context.Context, acct startdeliver.Account, accountID string, kind startdeliver.Kind, m startdeliver.Match, fields, update startdeliver.Fields) (int64, error) {
	key := identity.Key(accountID, string(kind), m.Field, m.Value)
	v, err, shared := p.creating.Do(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		return p.createOnce(ctx, acct, key, kind, m, fields, update)
	})
	if err != nil {
		return 0, err
	}
	id := v.(int64)
	if shared && len(update) > 0 {
		if _, err := p.opts.Client.Update(ctx, acct, kind, id, update); err != nil {
			return 0, err
		}
	}
	return id, nil
}

func (p *Processor) createOnce(ctx context.Context, acct startdeliver.Account, key string, kind startdeliver.Kind, m startdeliver.Match, fields, update startdeliver.Fields) (int64, error) {
	cl, err := p.opts.Claims.Acquire(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("claim new %s: %w", kind, err)
	}
	if cl.ID != 0 {
		// Another event created it moments ago.
		p.opts.Client.Put(acct, kind, m, cl.ID)
		if len(update) > 0 {
			if _, err := p.opts.Client.Update(ctx, acct, kind, cl.ID, update); err != nil {
				return 0, err
			}
		}
		return cl.ID, nil
	}
	if cl.TakenOver {
		// Its previous creator vanished, perhaps after creating it.
		p.opts.Client.Forget(acct, kind, m)
		if found, err := p.opts.Client.Find(ctx, acct, kind, m); err == nil {
			if id, ok := found.ID(); ok {
				_ = p.opts.Claims.Created(ctx, cl, id)
				p.opts.Client.Put(acct, kind, m, id)
				return id, nil
			}
		}
	}
	created, err := p.opts.Client.Create(ctx, acct, kind, fields)
	if err != nil {
		_ = p.opts.Claims.Release(context.WithoutCancel(ctx), cl)
		return 0, err
	}
	id, ok := created.ID()
	if !ok {
		return 0, failure.Permanent(ClassStartdeliver, fmt.Errorf("created %s has no id", kind))
	}
	p.opts.Client.Put(acct, kind, m, id)
	if err := p.opts.Claims.Created(context.WithoutCancel(ctx), cl, id); err != nil {
		p.log.WarnContext(ctx, "identity claim not updated; others wait for it to go stale", "error", err)
	}
	return id, nil
}

func merge(a, b startdeliver.Fields) startdeliver.Fields {
	if len(b) == 0 {
		return a
	}
	out := make(startdeliver.Fields, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// clip cuts s to at most n bytes on a rune boundary, and makes it valid
// UTF-8: Pub/Sub refuses attribute values that are not.
func clip(s string, n int) string {
	if len(s) > n {
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
