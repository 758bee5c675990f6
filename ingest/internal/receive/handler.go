// Package receive is ingest's HTTP API: Segment's destination endpoint and
// the Segment HTTP Tracking API. It authenticates, validates and publishes
// each event, and answers 2xx only once every accepted event is confirmed
// published (docs/api.md §1).
package receive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/startdeliver/segment-destination/ingest/internal/explain"
	"github.com/startdeliver/segment-destination/ingest/internal/publish"
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/segment"
	"github.com/startdeliver/segment-destination/shared/telemetry"
)

// publisher publishes one message and blocks until Pub/Sub confirms it, ctx
// ends, or publishing fails. It is called from many goroutines at once.
type publisher interface {
	Publish(ctx context.Context, msg *envelope.Encoded) (id string, err error)
}

// enqueuer is a publisher that also takes a message without waiting for
// its confirmation (publish.Publisher). With one, a batch's events are
// handed over one after the other, in the batch's order, which Pub/Sub
// then keeps for each ordering key (a person's events); with only Publish,
// concurrent calls would hand them over in whatever order the goroutines
// run.
type enqueuer interface {
	Enqueue(ctx context.Context, msg *envelope.Encoded) (*publish.Enqueued, error)
}

// accounts says whether an account may send events. Check returns nil for an
// enabled account, an error matching accountstore.ErrUnknown or
// accountstore.ErrDisabled, or any other error when it cannot tell (the caller
// answers 503). Safe for concurrent use.
type accounts interface {
	Check(ctx context.Context, accountID string) error
}

// sealer seals an API key for deliver alone, bound to its account and
// message (keyseal.Sealer). Safe for concurrent use.
type sealer interface {
	Seal(apiKey, accountID, messageID string) ([]byte, error)
}

// readiness reports whether the service can do its work now.
type readiness interface {
	Ready(ctx context.Context) error
}

// Options configure a Handler. Publisher and Accounts are required.
type Options struct {
	Publisher publisher
	Accounts  accounts
	// Sealer seals each event's API key (ingest always sets it). Without
	// one the key is published in plain text, in the previous envelope
	// version: for tests and benchmarks only.
	Sealer sealer
	Ready  readiness
	// Topic names the Pub/Sub topic in spans.
	Topic  string
	Logger *slog.Logger
	// MaxInflightBytes bounds the memory the requests in progress may hold
	// (MAX_INFLIGHT_BYTES; default DefaultMaxInflightBytes): their bodies,
	// the events decoded from them and the messages built for them. A
	// request that would pass it is answered 503 with Retry-After, which
	// Segment retries, so nothing is lost.
	MaxInflightBytes int64
	// Now and NewID are replaced in tests.
	Now   func() time.Time
	NewID func() string
	// Records, Configs and Explainer serve the events and explain
	// endpoints (events.go); nil ones answer 404. TraceURL links a trace
	// id to its trace (Cloud Trace); nil shows the local tracetree command.
	Records   records
	Configs   configs
	Explainer *explain.Explainer
	TraceURL  func(traceID string) string
}

// DefaultMaxInflightBytes is Options.MaxInflightBytes when unset: an eighth
// of a 512 MiB Cloud Run instance, room for a worst-case batch (about 42 MB:
// its body, its decoded events and 2,500 messages with the largest outer
// context merged), several ordinary ones and thousands of single events at
// once.
const DefaultMaxInflightBytes = 64 << 20

// MinInflightBytes is the least MaxInflightBytes that admits one maximal
// batch: its body, its decoded events, and its 2,500 events with the outer
// context and integrations merged into each.
const MinInflightBytes = (2+treeFactor+recordFactor)*segment.MaxRequestBytes + segment.MaxBatchEvents*(segment.MaxOuterBytes+32+segment.MaxOuterKeys*mapEntryBytes)

// recordFactor bounds the pre-pass's records (Scanner.RecordBytes) per byte
// of body: a 40-byte member for every 5 bytes of the smallest members
// ("":0,), twice that while its slice grows.
const recordFactor = 16

// mapEntryBytes is about what one map entry costs (key, interface value,
// bucket share).
const mapEntryBytes = 64

// Handler serves ingest's HTTP API.
type Handler struct {
	opts    Options
	mux     *http.ServeMux
	tracer  trace.Tracer
	log     *slog.Logger
	metrics *metrics
	recent  *recent // publications for "pending" (events.go)
	// spanName and spanAttrs are the publish span's name and the
	// attributes every publish span has.
	spanName  string
	spanAttrs []attribute.KeyValue

	work     work
	inflight atomic.Int64 // bytes held by requests in progress
}

// New returns the ingest handler.
func New(opts Options) *Handler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.NewID == nil {
		opts.NewID = uuid.NewString
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxInflightBytes <= 0 {
		opts.MaxInflightBytes = DefaultMaxInflightBytes
	}
	h := &Handler{
		opts:    opts,
		mux:     http.NewServeMux(),
		tracer:  otel.Tracer("github.com/startdeliver/segment-destination/ingest/receive"),
		log:     opts.Logger,
		metrics: newMetrics(otel.Meter("github.com/startdeliver/segment-destination/ingest/receive")),
		recent:  newRecent(opts.Now),

		spanName: "publish " + opts.Topic,
		spanAttrs: []attribute.KeyValue{
			attribute.String("messaging.system", "gcp_pubsub"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", opts.Topic),
		},
	}
	h.mux.HandleFunc("POST /{$}", h.destination)
	h.mux.HandleFunc("POST /v1/batch", h.batch)
	h.mux.HandleFunc("POST /v1/{type}", h.tracking)
	h.mux.HandleFunc("POST /v1/import", h.batch)
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	h.mux.HandleFunc("GET /readyz", h.readyz)
	h.mux.HandleFunc("GET /v1/events/{messageId}", h.event)
	h.mux.HandleFunc("GET /v1/events", h.events)
	h.mux.HandleFunc("POST /v1/explain", h.explain)
	h.mux.Handle("GET /console/", consoleHandler())
	h.mux.Handle("GET /console", http.RedirectHandler("/console/", http.StatusMovedPermanently))
	h.mux.HandleFunc("/", h.noRoute)
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

// noRoute answers what no route serves, in JSON like every other error:
// 405 with Allow when the path is served for other methods, else 404.
func (h *Handler) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := h.mux.Handler(probe); pattern != "" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		h.answer(r.Context(), w, fail(http.StatusMethodNotAllowed, "method not allowed here; use %s", strings.Join(allow, " or ")))
		return
	}
	h.answer(r.Context(), w, fail(http.StatusNotFound, "no such endpoint"))
}

// httpError is an answer other than 200, with a message safe to show.
type httpError struct {
	status int
	msg    string
	err    error // the cause, for logs; never shown to the caller
	// account (the key's hash) and messageID, when known, for the log
	// line and the server span.
	account, messageID string
}

// about records the account and event an error concerns, and returns it.
func (e *httpError) about(accountID, messageID string) *httpError {
	if e != nil {
		e.account = accountID
		// An invalid (overlong) messageId is the caller's arbitrary text:
		// it is not logged.
		if utf8.RuneCountInString(messageID) <= segment.MaxMessageIDLen {
			e.messageID = messageID
		}
	}
	return e
}

// reason is a short, bounded label for metrics.
func (e *httpError) reason() string {
	switch e.status {
	case http.StatusBadRequest:
		return "invalid"
	case http.StatusUnauthorized:
		return "unauthenticated"
	case http.StatusForbidden:
		return "disabled"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusUnsupportedMediaType:
		return "unsupported_media"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusServiceUnavailable:
		return "unavailable"
	}
	return "error"
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s", e.status, e.msg) }

func fail(status int, format string, args ...any) *httpError {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	if h.opts.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := h.opts.Ready.Ready(ctx); err != nil {
			h.log.WarnContext(ctx, "not ready", "error", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"message": "not ready: cannot reach Pub/Sub"})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// request is what every endpoint learns before it handles events.
type request struct {
	key       string
	accountID string
	settings  *account.SettingsOverride
	body      []byte
}

// authorize resolves the account of key.
func (h *Handler) authorize(ctx context.Context, key string) (string, *httpError) {
	id := envelope.AccountID(key)
	err := h.opts.Accounts.Check(ctx, id)
	switch {
	case err == nil:
		return id, nil
	case errors.Is(err, accountstore.ErrUnknown):
		return "", fail(http.StatusUnauthorized, "unknown API key").about(id, "")
	case errors.Is(err, accountstore.ErrDisabled):
		return "", fail(http.StatusForbidden, "account is disabled").about(id, "")
	default:
		return "", (&httpError{status: http.StatusServiceUnavailable, msg: "cannot check the API key right now; retry", err: err}).about(id, "")
	}
}

// headerAccount authorizes the key of the Authorization header, when there
// is one (present reports it).
func (h *Handler) headerAccount(ctx context.Context, r *http.Request) (key, accountID string, present bool, herr *httpError) {
	if key, present, herr = headerKey(r); herr != nil || !present {
		return key, "", present, herr
	}
	accountID, herr = h.authorize(ctx, key)
	return key, accountID, true, herr
}

// budget is the memory one request holds against the instance's
// MaxInflightBytes; release returns it.
type budget struct {
	h    *Handler
	held int64
}

// take reserves n more bytes, or reports false (and reserves nothing) when
// the instance would pass its limit.
func (b *budget) take(n int) bool {
	if n <= 0 {
		return true
	}
	now := b.h.inflight.Add(int64(n))
	if now > b.h.opts.MaxInflightBytes {
		b.h.inflight.Add(-int64(n))
		return false
	}
	b.h.work.notePeak(now)
	b.held += int64(n)
	return true
}

func (b *budget) release() {
	b.h.inflight.Add(-b.held)
	b.held = 0
}

// treeFactor is how much memory a decoded event may take per byte of its
// JSON, for the in-flight budget. Events are views of the body
// (segment.DecodeView): what they hold is the pre-pass's record of their
// members (reserved on its own, exactly: intake), their edits and a merged
// context, well under 1 byte per byte; 4 was the estimate for the tree of
// maps decoded before, kept, which leaves room to spare.
const treeFactor = 4

// intake is what every event endpoint does before its events: refuse what
// the headers show (type, encoding, declared size), authenticate from the
// Authorization header before reading the body, read and pre-scan the body
// within limit, and, when there was no header, authenticate the body's
// writeKey (when bodyKey allows it) found by the pre-pass without decoding
// the body. The caller must release the budget.
func (h *Handler) intake(ctx context.Context, r *http.Request, limit int64, bodyKey bool, b *budget) (*request, *segment.Scanner, *httpError) {
	if herr := checkHeaders(r, limit); herr != nil {
		return nil, nil, herr
	}
	key, present, herr := headerKey(r)
	if herr != nil {
		return nil, nil, herr
	}
	if !present && !bodyKey {
		return nil, nil, fail(http.StatusUnauthorized, "missing Authorization: Basic base64(<api key>:)")
	}
	req := &request{key: key}
	if present {
		if req.accountID, herr = h.authorize(ctx, key); herr != nil {
			return nil, nil, herr
		}
	}
	sc := &segment.Scanner{}
	body, herr := h.readBody(r, limit, sc, b.take)
	if herr != nil {
		return nil, nil, herr.about(req.accountID, "")
	}
	req.body = body
	// The pre-pass's record of the members, which the events are read
	// from: linear in the body, and counted like it.
	if !b.take(sc.RecordBytes()) {
		return nil, nil, busy().about(req.accountID, "")
	}
	if err := segment.CheckObject(body, sc); err != nil {
		return nil, nil, fail(http.StatusBadRequest, "%v", err).about(req.accountID, "")
	}
	if !present {
		wk, err := segment.WriteKey(body, sc)
		if err != nil {
			return nil, nil, fail(http.StatusBadRequest, "%v", err)
		}
		if wk == "" {
			return nil, nil, fail(http.StatusUnauthorized, "missing API key: send it as the Basic auth username or as writeKey")
		}
		req.key = wk
		if req.accountID, herr = h.authorize(ctx, wk); herr != nil {
			return nil, nil, herr
		}
	}
	if !bodyKey || limit == segment.MaxEventBytes {
		// One event: its decoded tree and its message. (A batch reserves
		// its cost at once when it knows it, before decoding its events.)
		if !b.take((treeFactor + 1) * len(body)) {
			return nil, nil, busy().about(req.accountID, "")
		}
	}
	return req, sc, nil
}

// destination serves POST /: one event as Segment delivers it to a partner
// destination.
func (h *Handler) destination(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	b := &budget{h: h}
	defer b.release()
	req, sc, herr := h.intake(ctx, r, segment.MaxEventBytes, false, b)
	if herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	if v := r.Header.Get("X-Segment-Settings"); v != "" {
		o, err := account.ParseSettingsHeader(v)
		if err == nil {
			err = o.Validate()
		}
		if err != nil {
			h.answer(ctx, w, fail(http.StatusBadRequest, "%v", err).about(req.accountID, ""))
			return
		}
		req.settings = &o
	}
	ev, herr := h.decodeEvent(req.body, sc, "")
	if herr != nil {
		h.answer(ctx, w, herr.about(req.accountID, ""))
		return
	}
	if herr := h.publish(ctx, req, ev); herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	writeAccepted(w, ev.MessageID)
}

// tracking serves POST /v1/{type} of the Segment HTTP Tracking API.
func (h *Handler) tracking(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	typ := segment.Type(r.PathValue("type"))
	if !typ.Known() {
		h.answer(ctx, w, fail(http.StatusNotFound, "unknown endpoint: the Tracking API serves /v1/identify, track, page, screen, group, alias and batch"))
		return
	}
	b := &budget{h: h}
	defer b.release()
	req, sc, herr := h.intake(ctx, r, segment.MaxEventBytes, true, b)
	if herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	ev, herr := h.decodeEvent(req.body, sc, typ)
	if herr != nil {
		h.answer(ctx, w, herr.about(req.accountID, messageIDOf(ev)))
		return
	}
	if herr := h.publish(ctx, req, ev); herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	writeAccepted(w, ev.MessageID)
}

func messageIDOf(ev *segment.Event) string {
	if ev == nil {
		return ""
	}
	return ev.MessageID
}

// decodeEvent decodes and prepares the event of a scanned request body. An
// event that decodes but fails validation is returned with the error, so
// that the caller can name it.
func (h *Handler) decodeEvent(body []byte, sc *segment.Scanner, typ segment.Type) (*segment.Event, *httpError) {
	h.work.decoded.Add(int64(len(body)))
	ev, err := segment.DecodeView(body, sc)
	if err != nil {
		return nil, fail(http.StatusBadRequest, "%v", err)
	}
	if herr := h.prepare(ev, typ); herr != nil {
		return ev, herr
	}
	return ev, nil
}

// prepare sets the type an endpoint implies, drops the write key, fills in
// messageId and receivedAt, and validates.
func (h *Handler) prepare(ev *segment.Event, typ segment.Type) *httpError {
	if typ != "" {
		ev.SetType(typ)
	}
	ev.DropWriteKey()
	if ev.MessageID == "" {
		ev.SetMessageID(h.opts.NewID())
	}
	if ev.ReceivedAt.IsZero() {
		ev.SetReceivedAt(h.opts.Now())
	}
	h.metrics.receivedEvent(context.Background(), ev.Type)
	if err := ev.Validate(); err != nil {
		return fail(http.StatusBadRequest, "invalid event: %v", err)
	}
	return nil
}

// batchResult is the body of a /v1/batch answer.
type batchResult struct {
	Success  bool            `json:"success"`
	Accepted []acceptedEvent `json:"accepted"`
	Rejected []rejectedEvent `json:"rejected"`
}

type acceptedEvent struct {
	Index     int    `json:"index"`
	MessageID string `json:"messageId"`
}

type rejectedEvent struct {
	Index     int    `json:"index"`
	MessageID string `json:"messageId,omitempty"`
	Message   string `json:"message"`
}

// batch serves POST /v1/batch: each valid event is published, each invalid
// one is listed as rejected, and the answer is 200 only when every valid
// event was published.
func (h *Handler) batch(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	bud := &budget{h: h}
	defer bud.release()
	req, sc, herr := h.intake(ctx, r, segment.MaxRequestBytes, true, bud)
	if herr != nil {
		h.answer(ctx, w, herr)
		return
	}
	b, err := segment.DecodeScannedBatch(req.body, sc)
	if err != nil {
		status := http.StatusBadRequest
		var tl *segment.TooLargeError
		if errors.As(err, &tl) {
			status = http.StatusRequestEntityTooLarge
		}
		h.answer(ctx, w, fail(status, "%v", err).about(req.accountID, ""))
		return
	}
	// Everything the batch will hold, reserved at once so that two batches
	// never each hold half of what both need: its decoded events (with the
	// outer keys copied into each event's own context) and its messages (at
	// most every event with the outer context merged).
	outerKeys := len(b.Context) + len(b.Integrations)
	if !bud.take(treeFactor*len(req.body) + len(req.body) + len(b.Items)*(b.OuterBytes+32+outerKeys*mapEntryBytes)) {
		h.answer(ctx, w, busy().about(req.accountID, ""))
		return
	}
	res := batchResult{Success: true, Accepted: []acceptedEvent{}, Rejected: []rejectedEvent{}}
	valid := make([]*segment.Event, 0, len(b.Items))
	index := make([]int, 0, len(b.Items))
	for i, raw := range b.Items {
		if len(raw) > segment.MaxEventBytes {
			h.metrics.reject(ctx, http.StatusRequestEntityTooLarge, "invalid_batch_event")
			res.Rejected = append(res.Rejected, rejectedEvent{Index: i, Message: fmt.Sprintf("event larger than %d bytes", segment.MaxEventBytes)})
			continue
		}
		h.work.decoded.Add(int64(len(raw)))
		ev, err := b.Event(i)
		if err != nil {
			h.metrics.reject(ctx, http.StatusBadRequest, "invalid_batch_event")
			res.Rejected = append(res.Rejected, rejectedEvent{Index: i, Message: err.Error()})
			continue
		}
		size := len(raw) + b.Merge(ev)
		if size > segment.MaxEventBytes {
			h.metrics.reject(ctx, http.StatusRequestEntityTooLarge, "invalid_batch_event")
			res.Rejected = append(res.Rejected, rejectedEvent{Index: i, MessageID: ev.MessageID,
				Message: fmt.Sprintf("event larger than %d bytes once the batch's context and integrations are merged into it", segment.MaxEventBytes)})
			continue
		}
		if herr := h.prepare(ev, ""); herr != nil {
			h.metrics.reject(ctx, herr.status, "invalid_batch_event")
			res.Rejected = append(res.Rejected, rejectedEvent{Index: i, MessageID: ev.MessageID, Message: herr.msg})
			continue
		}
		valid = append(valid, ev)
		index = append(index, i)
	}
	req.body = nil
	// Each event is encoded and handed to the publisher here, one after
	// the other in the batch's order. With a publisher that takes a
	// message without waiting (ingest's), every event is handed over
	// first and their confirmations are then waited for in turn, in this
	// goroutine: the publish timeout counts from the handover, so that
	// takes as long as the slowest, without a goroutine per event.
	// Otherwise each event's Publish runs in a goroutine of its own.
	errs := make([]*httpError, len(valid))
	pubs := make([]*pending, len(valid))
	q, handOver := h.opts.Publisher.(enqueuer)
	for i, ev := range valid {
		pub, herr := h.encode(ctx, req, ev)
		if herr != nil {
			errs[i] = herr
			continue
		}
		if handOver {
			pub.enqueue(q)
		}
		pubs[i] = pub
	}
	if handOver {
		for i, pub := range pubs {
			if pub != nil {
				errs[i] = pub.send()
			}
		}
	} else {
		var wg sync.WaitGroup
		for i, pub := range pubs {
			if pub != nil {
				wg.Go(func() { errs[i] = pub.send() })
			}
		}
		wg.Wait()
	}
	for i, herr := range errs {
		if herr != nil {
			h.answer(ctx, w, herr)
			return
		}
		res.Accepted = append(res.Accepted, acceptedEvent{Index: index[i], MessageID: valid[i].MessageID})
	}
	if len(res.Rejected) > 0 {
		h.log.InfoContext(ctx, "batch events rejected", "account", req.accountID, "rejected", len(res.Rejected), "accepted", len(res.Accepted))
	}
	writeJSON(w, http.StatusOK, res)
}

// publish encodes and publishes one event, waiting for Pub/Sub's
// confirmation.
func (h *Handler) publish(ctx context.Context, req *request, ev *segment.Event) *httpError {
	pub, herr := h.encode(ctx, req, ev)
	if herr != nil {
		return herr
	}
	return pub.send()
}

// pending is one encoded event on its way to Pub/Sub, with its span.
type pending struct {
	h    *Handler
	ctx  context.Context
	span trace.Span
	req  *request
	ev   *segment.Event
	msg  *envelope.Encoded
	// wait, when set, waits for the message enqueue handed over at
	// start; else send publishes it.
	wait  func() (string, error)
	start time.Time
}

// enqueue hands the message to q now; send then waits for it.
func (p *pending) enqueue(q enqueuer) {
	p.start = time.Now()
	e, err := q.Enqueue(p.ctx, p.msg)
	if err != nil {
		p.wait = func() (string, error) { return "", err }
		return
	}
	p.wait = func() (string, error) { return e.Wait(p.ctx) }
}

// encode starts the event's publish span and builds its message.
func (h *Handler) encode(ctx context.Context, req *request, ev *segment.Event) (*pending, *httpError) {
	// Its attributes are set when it ends, all in one call (endSpan).
	ctx, span := h.tracer.Start(ctx, h.spanName, producerKind...)
	m := &envelope.Message{
		AccountID:  req.accountID,
		APIKey:     req.key,
		Settings:   req.settings,
		ReceivedAt: ev.ReceivedAt,
		Trace:      telemetry.Inject(ctx),
		Event:      ev,
	}
	var err error
	if h.opts.Sealer != nil {
		if m.SealedKey, err = h.opts.Sealer.Seal(req.key, req.accountID, ev.MessageID); err != nil {
			span.SetStatus(codes.Error, "seal")
			h.endSpan(span, req, ev, "")
			return nil, (&httpError{status: http.StatusInternalServerError, msg: "could not encode the event", err: err}).about(req.accountID, ev.MessageID)
		}
		m.APIKey = ""
	}
	msg, err := envelope.Encode(m)
	if err != nil {
		span.SetStatus(codes.Error, "encode")
		h.endSpan(span, req, ev, "")
		return nil, (&httpError{status: http.StatusInternalServerError, msg: "could not encode the event", err: err}).about(req.accountID, ev.MessageID)
	}
	return &pending{h: h, ctx: ctx, span: span, req: req, ev: ev, msg: msg}, nil
}

// producerKind is the publish span's start option, built once (a variadic
// slice of options passed to an interface's method is allocated per call).
var producerKind = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}

// endSpan sets a publish span's attributes, all in one call (the SDK grows
// a span's attribute slice on each), and ends it; id is Pub/Sub's message
// id, "" when it was not published.
func (h *Handler) endSpan(span trace.Span, req *request, ev *segment.Event, id string) {
	if span.IsRecording() {
		telemetry.SetAttributes(span, func(attrs []attribute.KeyValue) []attribute.KeyValue {
			attrs = append(attrs, h.spanAttrs...)
			attrs = append(attrs,
				attribute.String("segment.message_id", ev.MessageID),
				attribute.String("segment.type", string(ev.Type)),
				attribute.String("account.id", req.accountID))
			if id != "" {
				attrs = append(attrs, attribute.String("messaging.message.id", id))
			}
			return attrs
		})
	}
	span.End()
}

// send publishes the message, waits for the confirmation and ends the span.
func (p *pending) send() *httpError {
	h, ctx, span, ev := p.h, p.ctx, p.span, p.ev
	start := p.start
	var id string
	var err error
	if p.wait != nil {
		id, err = p.wait()
	} else {
		start = time.Now()
		id, err = h.opts.Publisher.Publish(ctx, p.msg)
	}
	if err != nil {
		span.SetStatus(codes.Error, "publish failed")
		span.RecordError(err)
		h.endSpan(span, p.req, ev, "")
		return (&httpError{status: http.StatusServiceUnavailable, msg: "could not publish the event; retry", err: err}).about(p.req.accountID, ev.MessageID)
	}
	h.endSpan(span, p.req, ev, id)
	h.recent.add(p.req.accountID, ev.MessageID)
	h.metrics.publish.Record(ctx, time.Since(start).Seconds())
	h.metrics.publishedEvent(ctx, ev.Type, p.req.accountID)
	return nil
}

// answer writes an error answer and logs its cause.
func (h *Handler) answer(ctx context.Context, w http.ResponseWriter, e *httpError) {
	level := slog.LevelInfo
	if e.status >= 500 {
		level = slog.LevelError
		w.Header().Set("Retry-After", "1")
	}
	attrs := []any{"status", e.status, "reason", e.msg}
	if e.err != nil {
		attrs = append(attrs, "error", e.err.Error())
	}
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(attribute.String("ingest.reject_reason", e.reason()))
	if e.account != "" {
		attrs = append(attrs, "account", e.account)
		span.SetAttributes(attribute.String("account.id", e.account))
	}
	if e.messageID != "" {
		attrs = append(attrs, "messageId", e.messageID)
		span.SetAttributes(attribute.String("segment.message_id", e.messageID))
	}
	h.log.Log(ctx, level, "request rejected", attrs...)
	h.metrics.reject(ctx, e.status, e.reason())
	writeJSON(w, e.status, map[string]string{"message": e.msg})
}

// writeAccepted answers 200 for one published event: the body writeJSON
// writes for {"success":true,"messageId":id}, without encoding a map.
func writeAccepted(w http.ResponseWriter, messageID string) {
	b := make([]byte, 0, len(messageID)+40)
	b = append(b, `{"messageId":`...)
	if plainJSON(messageID) {
		b = append(b, '"')
		b = append(b, messageID...)
		b = append(b, '"')
	} else {
		id, err := json.Marshal(messageID)
		if err != nil {
			writeJSON(w, http.StatusOK, map[string]any{"success": true, "messageId": messageID})
			return
		}
		b = append(b, id...)
	}
	b = append(b, `,"success":true}`+"\n"...)
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// jsonContentType is the Content-Type header's value, one slice for every
// answer (net/http only reads it; Header.Set would allocate one each time).
var jsonContentType = []string{"application/json"}

// plainJSON reports whether s is written in JSON as itself between quotes
// by encoding/json: printable ASCII other than the quote, the backslash and
// the characters it escapes for HTML (<, >, &).
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
